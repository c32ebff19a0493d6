"""SLA clock, leases and clocks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telenet.domain.errors import Invalid
from telenet.domain.lifecycle import Kind, Priority
from telenet.domain.sla import (
    DEFAULT_LEASE_MINUTES,
    DEFAULT_SLA_MINUTES,
    Clock,
    FixedClock,
    SystemClock,
    due_at,
    is_breached,
    lease_until,
    remaining,
    sla_minutes_for,
)

T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)
SHANGHAI = timezone(timedelta(hours=8))

aware_datetimes = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))


@pytest.mark.parametrize(
    ("kind", "priority", "minutes"),
    [
        (Kind.IMAGING, Priority.STAT, 30),
        (Kind.IMAGING, Priority.URGENT, 60),
        (Kind.IMAGING, Priority.ROUTINE, 240),
        (Kind.ECG, Priority.STAT, 10),
        (Kind.ECG, Priority.URGENT, 10),
        (Kind.ECG, Priority.ROUTINE, 30),
        (Kind.CONSULTATION, Priority.STAT, 120),
        (Kind.CONSULTATION, Priority.URGENT, 1440),
        (Kind.CONSULTATION, Priority.ROUTINE, 2880),
    ],
)
def test_default_sla_table(kind: Kind, priority: Priority, minutes: int) -> None:
    assert DEFAULT_SLA_MINUTES[kind][priority] == minutes
    assert DEFAULT_SLA_MINUTES[kind.value][priority.value] == minutes
    assert due_at(T0, DEFAULT_SLA_MINUTES[kind], priority) == T0 + timedelta(minutes=minutes)


def test_center_table_overrides_defaults() -> None:
    table = sla_minutes_for("imaging", {"routine": 120})
    assert table == {"stat": 30, "urgent": 60, "routine": 120}
    assert due_at(T0, table, "routine") == T0 + timedelta(hours=2)
    with pytest.raises(Invalid, match="unknown priority"):
        sla_minutes_for("imaging", {"asap": 5})
    with pytest.raises(Invalid, match="positive integer"):
        sla_minutes_for("ecg", {"stat": 0})


def test_due_at_needs_the_priority_in_the_table() -> None:
    with pytest.raises(Invalid, match="no sla minutes configured for priority stat"):
        due_at(T0, {"routine": 60}, "stat")
    with pytest.raises(Invalid, match="unknown priority"):
        due_at(T0, {"routine": 60}, "whenever")


def test_breach_is_strictly_after_due() -> None:
    due = due_at(T0, {"stat": 30}, Priority.STAT)
    assert not is_breached(due, due)
    assert remaining(due, due) == timedelta(0)
    assert is_breached(due, due + timedelta(microseconds=1))
    assert remaining(due, T0) == timedelta(minutes=30)
    assert remaining(due, due + timedelta(minutes=5)) == timedelta(minutes=-5)


@pytest.mark.parametrize(("priority", "minutes"), [("stat", 15), ("urgent", 30), ("routine", 60)])
def test_lease(priority: str, minutes: int) -> None:
    assert DEFAULT_LEASE_MINUTES[priority] == minutes
    assert lease_until(T0, priority) == T0 + timedelta(minutes=minutes)
    assert lease_until(T0, priority, {"stat": 5, "urgent": 5, "routine": 5}) == T0 + timedelta(minutes=5)


@pytest.mark.parametrize(
    "call",
    [
        lambda naive: due_at(naive, {"stat": 30}, "stat"),
        lambda naive: remaining(naive, T0),
        lambda naive: remaining(T0, naive),
        lambda naive: is_breached(T0, naive),
        lambda naive: lease_until(naive, "stat"),
        lambda naive: FixedClock(naive),
        lambda naive: FixedClock(T0).set(naive),
    ],
)
def test_naive_datetimes_are_refused(call: Callable[[datetime], object]) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        call(datetime(2024, 3, 1, 8, 0))


def test_other_timezones_are_normalised_to_utc() -> None:
    local = datetime(2024, 3, 1, 16, 0, tzinfo=SHANGHAI)
    result = due_at(local, {"stat": 30}, "stat")
    assert result == T0 + timedelta(minutes=30)
    assert result.tzinfo is UTC


def test_clocks() -> None:
    clock: Clock = FixedClock(T0)
    assert clock.now() == T0
    fixed = FixedClock(T0)
    assert fixed.advance(minutes=5) == T0 + timedelta(minutes=5)
    assert fixed.advance(timedelta(hours=1), seconds=30) == T0 + timedelta(minutes=65, seconds=30)
    fixed.set(T0)
    assert fixed.now() == T0
    system: Clock = SystemClock()
    now = system.now()
    assert now.tzinfo is UTC
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)


@given(
    aware_datetimes,
    st.sampled_from(list(Kind)),
    st.sampled_from(list(Priority)),
    st.integers(min_value=1, max_value=10_000),
)
def test_due_at_adds_exactly_the_sla(queued_at: datetime, kind: Kind, priority: Priority, minutes: int) -> None:
    table = sla_minutes_for(kind, {priority.value: minutes})
    due = due_at(queued_at, table, priority)
    assert due - queued_at == timedelta(minutes=minutes)
    assert due_at(queued_at.astimezone(SHANGHAI), table, priority) == due


@given(aware_datetimes, aware_datetimes)
def test_breached_exactly_when_remaining_is_negative(due: datetime, now: datetime) -> None:
    assert is_breached(due, now) == (remaining(due, now) < timedelta(0))
    assert remaining(due, now) == due - now


@given(aware_datetimes, st.lists(st.integers(min_value=0, max_value=100_000), max_size=10))
def test_fixed_clock_advances_by_the_sum(start: datetime, steps: list[int]) -> None:
    clock = FixedClock(start)
    for step in steps:
        clock.advance(seconds=step)
    assert clock.now() - start == timedelta(seconds=sum(steps))
