"""SLA clock and claim leases: when a request is due and how long a claim holds (DESIGN "Policy facts").

Every datetime here is timezone-aware; naive input raises ``ValueError`` because a naive time in a
network spanning servers, modalities and HIS clocks is a bug, not a default.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Protocol

from telenet.domain.errors import Invalid
from telenet.domain.lifecycle import Kind, Priority

# Default SLA minutes per service and priority. Each center may override them (center.sla).
#
# Published figures (a Chinese hospital's report time limits, and remote-ECG service promises) are
# marked [published]; the rest are our configurable defaults, marked [ours], with the reasoning.
#
# imaging
#   stat    30   [published] emergency X-ray 30 min and emergency head CT/MR 30 min. The general
#                emergency CT/MR limit is 60 min, but one number per priority must not let the
#                strictest emergency case run late, so stat takes the 30 min limit.
#   urgent  60   [ours, from published] our "urgent" sits between emergency and routine; it takes the
#                published emergency CT/MR limit of 60 min.
#   routine 240  [published] routine CT/MR 4 h. Routine X-ray is published at 2 h: a center that reads
#                only DR/CR/DX should configure routine=120. Complex cases (24 h, published) are not a
#                priority of their own; a coordinator handles them by reassigning or escalating.
# ecg
#   stat    10   [published] remote ECG services promise a read in about 10 min.
#   urgent  10   [published] same promise; an ECG that is not stat is still read at once.
#   routine 30   [ours] no published routine figure; 30 min keeps ECG well ahead of imaging.
# consultation
#   stat    120  [ours] no published emergency figure; 2 h leaves time to gather a specialist while
#                staying an order of magnitude below the urgent limit.
#   urgent  1440 [published] urgent consultations within 24 h.
#   routine 2880 [ours] 48 h, twice the urgent limit.
DEFAULT_SLA_MINUTES: Mapping[str, Mapping[str, int]] = MappingProxyType(
    {
        Kind.IMAGING: MappingProxyType({Priority.STAT: 30, Priority.URGENT: 60, Priority.ROUTINE: 240}),
        Kind.ECG: MappingProxyType({Priority.STAT: 10, Priority.URGENT: 10, Priority.ROUTINE: 30}),
        Kind.CONSULTATION: MappingProxyType({Priority.STAT: 120, Priority.URGENT: 1440, Priority.ROUTINE: 2880}),
    }
)

# How long a claim holds before the request goes back to the queue [ours]: long enough to read and
# report one item at that priority, short enough that an abandoned stat item is soon picked up again.
# The holder renews the lease by claiming again.
DEFAULT_LEASE_MINUTES: Mapping[str, int] = MappingProxyType(
    {Priority.STAT: 15, Priority.URGENT: 30, Priority.ROUTINE: 60}
)


def require_aware(value: datetime, name: str = "datetime") -> datetime:
    """``value`` converted to UTC; raises ``ValueError`` when it is naive."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value.isoformat()}")
    return value.astimezone(UTC)


def _priority(priority: Priority | str) -> Priority:
    try:
        return Priority(priority)
    except ValueError:
        raise Invalid(
            f"unknown priority {priority!r} (expected one of: stat, urgent, routine)",
            code="unknown-priority",
            details={"priority": str(priority)},
        ) from None


def _minutes(table: Mapping[str, int], priority: Priority, what: str) -> int:
    minutes = table.get(priority.value)
    if minutes is None:
        raise Invalid(f"no {what} minutes configured for priority {priority.value}", code=f"no-{what}")
    if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes <= 0:
        raise Invalid(
            f"{what} minutes for priority {priority.value} must be a positive integer, got {minutes!r}",
            code=f"bad-{what}",
        )
    return minutes


def sla_minutes_for(kind: Kind | str, configured: Mapping[str, int] | None = None) -> dict[str, int]:
    """The SLA table of a center: its configured minutes over the defaults of its service.

    Keys are priority values (``"stat"``...); unknown keys in ``configured`` raise ``Invalid``.
    """
    try:
        kind_ = Kind(kind)
    except ValueError:
        raise Invalid(f"unknown kind {kind!r}", code="unknown-kind", details={"kind": str(kind)}) from None
    merged = {str(priority): minutes for priority, minutes in DEFAULT_SLA_MINUTES[kind_].items()}
    for key, minutes in (configured or {}).items():
        merged[_priority(key).value] = minutes
    for priority in Priority:
        _minutes(merged, priority, "sla")
    return merged


def due_at(queued_at: datetime, sla_minutes: Mapping[str, int], priority: Priority | str) -> datetime:
    """``queued_at + sla_minutes[priority]`` in UTC; ``sla_minutes`` is the center's table."""
    start = require_aware(queued_at, "queued_at")
    return start + timedelta(minutes=_minutes(sla_minutes, _priority(priority), "sla"))


def remaining(due_at: datetime, now: datetime) -> timedelta:
    """Time left until ``due_at``; negative once the SLA is breached."""
    return require_aware(due_at, "due_at") - require_aware(now, "now")


def is_breached(due_at: datetime, now: datetime) -> bool:
    """True when ``now`` is strictly after ``due_at``: a report signed exactly at ``due_at`` is on time."""
    return require_aware(now, "now") > require_aware(due_at, "due_at")


def lease_until(
    now: datetime, priority: Priority | str, lease_minutes: Mapping[str, float] = DEFAULT_LEASE_MINUTES
) -> datetime:
    """When a claim taken (or renewed) at ``now`` runs out; lease lengths may be fractional minutes."""
    level = _priority(priority)
    minutes = lease_minutes.get(level.value)
    if isinstance(minutes, bool) or not isinstance(minutes, int | float) or minutes <= 0:
        raise Invalid(
            f"lease minutes for priority {level.value} must be a positive number, got {minutes!r}", code="bad-lease"
        )
    return require_aware(now, "now") + timedelta(minutes=minutes)


class Clock(Protocol):
    """Where the current time comes from; injected so tests and simulations control time."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that stands still until told otherwise: ``set`` it or ``advance`` it (tests, simulations)."""

    def __init__(self, at: datetime) -> None:
        self._at = require_aware(at, "at")

    def now(self) -> datetime:
        return self._at

    def set(self, at: datetime) -> None:
        self._at = require_aware(at, "at")

    def advance(self, delta: timedelta | None = None, /, **units: float) -> datetime:
        """Move forward by ``delta`` or by ``timedelta(**units)`` (``minutes=5``); returns the new time."""
        step = (delta or timedelta()) + timedelta(**units)
        self._at = self._at + step
        return self._at
