"""The arithmetic of the assessment figures (考核): percentiles, turnaround by priority, SLA compliance.

Pure and exact: percentiles are computed in rational arithmetic and rounded once to a float; money
never passes through here as a float (fees stay integer fen in ``fees``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from typing import TypedDict

from telenet.domain.errors import Invalid

PERCENTILE_METHOD = (
    "linear interpolation between closest ranks (Hyndman & Fan type 7, numpy's default 'linear'): "
    "sort the n values x[0..n-1], h = (n-1)*q/100, i = floor(h), "
    "result = x[i] + (h-i)*(x[i+1]-x[i]) (x[n-1] when i = n-1)"
)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (``0 <= q <= 100``) by ``PERCENTILE_METHOD``; None for no values.

    Computed exactly with fractions and rounded once, so ``percentile([1, 2], 50) == 1.5`` and
    ``percentile(xs, 0) == min(xs)``, ``percentile(xs, 100) == max(xs)``.
    """
    if isinstance(q, bool) or not isinstance(q, int | float) or not 0 <= q <= 100:
        raise Invalid(f"q must be a number in 0..100, got {q!r}")
    if not values:
        return None
    if any(isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) for v in values):
        raise Invalid("percentile needs finite numbers")
    ordered = sorted(values)
    h = (len(ordered) - 1) * Fraction(q) / 100
    lo = math.floor(h)
    if lo == len(ordered) - 1:
        return float(ordered[lo])
    low, high = Fraction(ordered[lo]), Fraction(ordered[lo + 1])
    return float(low + (h - lo) * (high - low))


def median(values: Sequence[float]) -> float | None:
    """The 50th percentile: the middle value, or the mean of the two middle ones; None for no values."""
    return percentile(values, 50)


def ratio(numerator: int, denominator: int) -> float | None:
    """``numerator / denominator`` (compliance, recognition rate); None when there is nothing to count."""
    if denominator == 0:
        return None
    return numerator / denominator


@dataclass(frozen=True)
class TurnaroundSample:
    """The clock of one finished request: ordered → queued (data complete) → final, against ``due_at``."""

    priority: str
    queued_at: datetime
    ordered_at: datetime
    final_at: datetime
    due_at: datetime


class DurationSummary(TypedDict):
    median: float | None
    p90: float | None


class PrioritySummary(TypedDict):
    count: int
    queued_to_final_minutes: DurationSummary
    ordered_to_final_minutes: DurationSummary
    sla_met: int
    sla_compliance: float | None


class TurnaroundSummary(TypedDict):
    definitions: dict[str, str]
    by_priority: dict[str, PrioritySummary]
    overall: PrioritySummary


DEFINITIONS: dict[str, str] = {
    "queued_to_final_minutes": (
        "minutes from the request entering a reading queue (data complete, or at once for a "
        "consultation) to its final signed report; the time the center is answerable for"
    ),
    "ordered_to_final_minutes": (
        "minutes from the order to the final signed report, including the wait for images / ECG data"
    ),
    "median": "the 50th percentile, by the percentile method below",
    "p90": "the 90th percentile, by the percentile method below",
    "percentile_method": PERCENTILE_METHOD,
    "sla_met": "count of requests whose final_at <= due_at (a report exactly at the deadline meets it)",
    "sla_compliance": "sla_met / count; null when count is 0",
    "count": "finished requests (with a final report) in the selection",
}

PRIORITY_ORDER = ("stat", "urgent", "routine")


def _minutes(start: datetime, end: datetime, what: str) -> float:
    seconds = (end - start).total_seconds()
    if seconds < 0:
        raise Invalid(f"{what} ends before it starts ({start.isoformat()} > {end.isoformat()})")
    return seconds / 60


def _summarize(samples: Sequence[TurnaroundSample]) -> PrioritySummary:
    queued = [_minutes(s.queued_at, s.final_at, "queued→final") for s in samples]
    ordered = [_minutes(s.ordered_at, s.final_at, "ordered→final") for s in samples]
    met = sum(1 for s in samples if s.final_at <= s.due_at)
    return {
        "count": len(samples),
        "queued_to_final_minutes": {"median": median(queued), "p90": percentile(queued, 90)},
        "ordered_to_final_minutes": {"median": median(ordered), "p90": percentile(ordered, 90)},
        "sla_met": met,
        "sla_compliance": ratio(met, len(samples)),
    }


def turnaround_summary(samples: Iterable[TurnaroundSample]) -> TurnaroundSummary:
    """Turnaround and SLA compliance per priority and overall, with the definitions used.

    Priorities appear as stat, urgent, routine, then any others alphabetically; only priorities with
    samples appear. Raises Invalid for a sample whose final report precedes its queueing or order.
    """
    items = list(samples)
    groups: dict[str, list[TurnaroundSample]] = {}
    for sample in items:
        groups.setdefault(sample.priority, []).append(sample)

    def order(priority: str) -> tuple[int, str]:
        known = priority in PRIORITY_ORDER
        return (PRIORITY_ORDER.index(priority) if known else len(PRIORITY_ORDER), priority)

    return {
        "definitions": dict(DEFINITIONS),
        "by_priority": {priority: _summarize(groups[priority]) for priority in sorted(groups, key=order)},
        "overall": _summarize(items),
    }
