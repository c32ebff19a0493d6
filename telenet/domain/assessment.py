"""The assessment figures (考核) as pure functions over plain samples: volumes, turnaround with SLA
compliance, critical-finding acknowledgement, recognition, fee totals, and the CSV flattening.

The service layer reads the rows; everything that is counted or averaged is decided here, so the
definitions printed next to the figures are the ones the code applies.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from telenet.domain.recognition import LABELS, NotRecognizedReason
from telenet.domain.stats import (
    PRIORITY_ORDER,
    PrioritySummary,
    TurnaroundSample,
    TurnaroundSummary,
    median,
    percentile,
    ratio,
    turnaround_summary,
)
from telenet.domain.tiers import Tier

KIND_ORDER = ("imaging", "ecg", "consultation")
STATE_ORDER = ("ordered", "queued", "claimed", "final", "returned", "cancelled")


def yuan(fen: int) -> str:
    """Integer fen as an exact yuan string: ``12345 → "123.45"``, ``-5 → "-0.05"`` (no float on the way)."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(fen), 100)
    return f"{sign}{whole}.{cents:02d}"


def _ordered_counts(counter: Counter[str], order: Sequence[str]) -> dict[str, int]:
    known = [key for key in order if counter[key]]
    rest = sorted(key for key in counter if key not in order and counter[key])
    return {key: counter[key] for key in (*known, *rest)}


# --- volumes -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrderedRequest:
    """A request ordered in the period: what the volumes count."""

    kind: str
    priority: str
    requesting_tier: str
    state: str


def volumes(requests: Iterable[OrderedRequest]) -> dict[str, Any]:
    items = list(requests)
    return {
        "total": len(items),
        "by_kind": _ordered_counts(Counter(r.kind for r in items), KIND_ORDER),
        "by_priority": _ordered_counts(Counter(r.priority for r in items), PRIORITY_ORDER),
        "by_requesting_tier": _ordered_counts(Counter(r.requesting_tier for r in items), tuple(t.value for t in Tier)),
        "by_state_now": _ordered_counts(Counter(r.state for r in items), STATE_ORDER),
    }


# --- turnaround and SLA ------------------------------------------------------------------------------

SLA_DEFINITIONS = {
    "sla_met": (
        "count of finished requests whose final report was signed no later than their due time "
        "(final_at <= due_at, a report exactly at the deadline meets it) and that never breached an SLA "
        "on the way (an escalated request that breached at its first center does not meet it, even when "
        "the second center reported within its own due time)"
    ),
    "sla_compliance": "sla_met / count; null when count is 0",
}


@dataclass(frozen=True)
class FinishedRequest:
    """A request finalized in the period: the turnaround clock and whether it ever breached its SLA."""

    priority: str
    ordered_at: datetime
    queued_at: datetime
    final_at: datetime
    due_at: datetime
    breached: bool

    def met(self) -> bool:
        return not self.breached and self.final_at <= self.due_at


def _with_sla(summary: PrioritySummary, samples: Sequence[FinishedRequest]) -> PrioritySummary:
    met = sum(1 for s in samples if s.met())
    return {**summary, "sla_met": met, "sla_compliance": ratio(met, len(samples))}


def turnaround(samples: Iterable[FinishedRequest]) -> TurnaroundSummary:
    """``stats.turnaround_summary`` with SLA compliance that also counts breaches before an escalation."""
    items = list(samples)
    summary = turnaround_summary(
        TurnaroundSample(s.priority, s.queued_at, s.ordered_at, s.final_at, s.due_at) for s in items
    )
    by_priority = {
        priority: _with_sla(figures, [s for s in items if s.priority == priority])
        for priority, figures in summary["by_priority"].items()
    }
    return {
        "definitions": {**summary["definitions"], **SLA_DEFINITIONS},
        "by_priority": by_priority,
        "overall": _with_sla(summary["overall"], items),
    }


# --- critical findings -------------------------------------------------------------------------------

CRITICAL_DEFINITIONS = {
    "raised": "critical findings (危急值) raised in the period by reports of the selected requests",
    "acknowledgement_minutes": "minutes from raising to the requesting side's acknowledgement with read-back",
    "escalated": "raised findings that were escalated at least once for want of a timely acknowledgement",
    "unacknowledged": "raised findings not acknowledged when the figures were computed",
}


@dataclass(frozen=True)
class CriticalSample:
    raised_at: datetime
    acknowledged_at: datetime | None
    escalation_level: int


def critical_findings(samples: Iterable[CriticalSample]) -> dict[str, Any]:
    items = list(samples)
    minutes = [(s.acknowledged_at - s.raised_at).total_seconds() / 60 for s in items if s.acknowledged_at is not None]
    return {
        "definitions": dict(CRITICAL_DEFINITIONS),
        "raised": len(items),
        "acknowledged": len(minutes),
        "unacknowledged": len(items) - len(minutes),
        "escalated": sum(1 for s in items if s.escalation_level > 0),
        "acknowledgement_minutes": {"median": median(minutes), "p90": percentile(minutes, 90)},
    }


# --- recognition -------------------------------------------------------------------------------------

RECOGNITION_DEFINITIONS = {
    "decisions": "recognition decisions (互认) recorded in the period",
    "recognition_rate": "recognized / decisions; null when there are no decisions",
    "fees_avoided_fen": "sum of the schedule prices of the exams not repeated because a result was recognized",
}


@dataclass(frozen=True)
class DecisionSample:
    decision: str
    reason_code: str | None
    fee_avoided_fen: int | None


def recognition(samples: Iterable[DecisionSample]) -> dict[str, Any]:
    items = list(samples)
    recognized = [s for s in items if s.decision == "recognized"]
    reasons = Counter(s.reason_code for s in items if s.decision == "not_recognized" and s.reason_code)
    avoided = sum(s.fee_avoided_fen or 0 for s in recognized)
    return {
        "definitions": dict(RECOGNITION_DEFINITIONS),
        "decisions": len(items),
        "recognized": len(recognized),
        "not_recognized": len(items) - len(recognized),
        "recognition_rate": ratio(len(recognized), len(items)),
        "fees_avoided_fen": avoided,
        "fees_avoided_yuan": yuan(avoided),
        "not_recognized_by_reason": {
            reason.value: {"label": LABELS[reason], "count": reasons[reason.value]}
            for reason in NotRecognizedReason
            if reasons[reason.value]
        },
    }


# --- fees --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeeSample:
    price_fen: int
    inviting_fen: int
    invited_fen: int
    is_refund: bool


def fee_totals(samples: Iterable[FeeSample], finals_without_fee: int = 0) -> dict[str, Any]:
    items = list(samples)
    gross = sum(s.price_fen for s in items)
    return {
        "definitions": {
            "gross_fen": "sum of the prices of the ledger lines in the period (refunds are negative)",
            "finals_without_fee": (
                "final reports in the period with no ledger line: no agreement between the two institutions "
                "(e.g. a center of the requester's own institution) or no price in the schedule"
            ),
        },
        "charges": sum(1 for s in items if not s.is_refund),
        "refunds": sum(1 for s in items if s.is_refund),
        "gross_fen": gross,
        "inviting_fen": sum(s.inviting_fen for s in items),
        "invited_fen": sum(s.invited_fen for s in items),
        "gross_yuan": yuan(gross),
        "finals_without_fee": finals_without_fee,
    }


# --- CSV ---------------------------------------------------------------------------------------------


def flatten(figures: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested figures as ``(dotted.name, value)`` rows in document order: the long CSV form, one figure a
    row, so a new figure never shifts a column. None becomes an empty cell, floats keep full precision."""
    rows: list[tuple[str, str]] = []
    for key, value in figures.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            rows.extend(flatten(value, name))
        elif isinstance(value, list | tuple):
            rows.append((name, ";".join(str(v) for v in value)))
        elif value is None:
            rows.append((name, ""))
        elif isinstance(value, bool):
            rows.append((name, "true" if value else "false"))
        else:
            rows.append((name, str(value)))
    return rows
