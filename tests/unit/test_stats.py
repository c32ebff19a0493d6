"""Percentiles against hand computations and numpy; turnaround and SLA summary."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from telenet.domain.errors import Invalid
from telenet.domain.stats import (
    DEFINITIONS,
    TurnaroundSample,
    median,
    percentile,
    ratio,
    turnaround_summary,
)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        # by hand, h = (n-1)*q/100, interpolate between x[floor(h)] and the next
        ([7], 0, 7.0),
        ([7], 90, 7.0),
        ([1, 2], 50, 1.5),
        ([1, 2, 3, 4], 50, 2.5),  # h = 1.5
        ([3, 1, 2], 50, 2.0),  # unsorted input; h = 1
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90, 9.1),  # h = 8.1 -> 9 + 0.1*(10-9)
        ([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 50, 5.5),  # h = 4.5
        ([10, 20, 30, 40, 50], 90, 46.0),  # h = 3.6 -> 40 + 0.6*10
        ([10, 20, 30, 40, 50], 25, 20.0),  # h = 1
        ([10, 20, 30, 40, 50], 0, 10.0),
        ([10, 20, 30, 40, 50], 100, 50.0),
        ([15, 20, 35, 40, 50], 40, 29.0),  # h = 1.6 -> 20 + 0.6*15
        ([0.5, 0.25], 50, 0.375),
        ([5, 5, 5, 1], 90, 5.0),
    ],
)
def test_percentile_by_hand(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == expected


def test_percentile_rounds_once() -> None:
    # h is computed as a fraction, so q = 100/3 over four values lands on x[1] and not a hair above it
    assert percentile(list(range(1, 11)), 90) == 9.1
    assert percentile([0, 1, 2, 3], 100 / 3) == 1.0


def test_empty_and_bad_input() -> None:
    assert percentile([], 50) is None
    assert median([]) is None
    for q in (-0.1, 100.1, math.nan, True):
        with pytest.raises(Invalid):
            percentile([1.0], q)
    for bad in ([math.nan], [1.0, math.inf]):
        with pytest.raises(Invalid):
            percentile(bad, 50)


def test_median() -> None:
    assert median([4, 1, 3]) == 3.0
    assert median([4, 1, 3, 2]) == 2.5


finite = st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False)


@given(values=st.lists(finite, min_size=1, max_size=50), q=st.floats(0, 100))
def test_percentile_matches_numpy_linear(values: list[float], q: float) -> None:
    got = percentile(values, q)
    assert got is not None
    assert got == pytest.approx(float(np.percentile(values, q, method="linear")), rel=1e-9, abs=1e-6)
    assert min(values) <= got <= max(values)


@given(values=st.lists(finite, min_size=1, max_size=50), q1=st.floats(0, 100), q2=st.floats(0, 100))
def test_percentile_is_monotone(values: list[float], q1: float, q2: float) -> None:
    low, high = sorted((q1, q2))
    assert percentile(values, low) <= percentile(values, high)  # type: ignore[operator]


def test_ratio() -> None:
    assert ratio(0, 0) is None
    assert ratio(3, 4) == 0.75


T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


def sample(priority: str, wait: int, read: int, sla: int) -> TurnaroundSample:
    """Ordered at T0, queued ``wait`` minutes later, final ``read`` minutes after that, due ``sla`` after
    queueing."""
    queued = T0 + timedelta(minutes=wait)
    return TurnaroundSample(
        priority=priority,
        ordered_at=T0,
        queued_at=queued,
        final_at=queued + timedelta(minutes=read),
        due_at=queued + timedelta(minutes=sla),
    )


def test_turnaround_summary_by_hand() -> None:
    samples = [
        sample("routine", 10, 100, 240),
        sample("stat", 5, 20, 30),
        sample("routine", 20, 300, 240),  # breached
        sample("stat", 0, 30, 30),  # exactly at the deadline: met
        sample("stat", 15, 40, 30),  # breached
        sample("vip", 0, 1, 1),
    ]
    summary = turnaround_summary(samples)
    assert list(summary["by_priority"]) == ["stat", "routine", "vip"]
    stat = summary["by_priority"]["stat"]
    assert stat["count"] == 3
    # queued->final minutes 20, 30, 40: median 30, p90 h = 1.8 -> 30 + 0.8*10 = 38
    assert stat["queued_to_final_minutes"] == {"median": 30.0, "p90": 38.0}
    # ordered->final minutes 25, 30, 55: median 30, p90 30 + 0.8*25 = 50
    assert stat["ordered_to_final_minutes"] == {"median": 30.0, "p90": 50.0}
    assert (stat["sla_met"], stat["sla_compliance"]) == (2, 2 / 3)
    routine = summary["by_priority"]["routine"]
    # 100, 300: median 200, p90 h = 0.9 -> 100 + 0.9*200 = 280; ordered 110, 320 -> 215, 299
    assert routine["queued_to_final_minutes"] == {"median": 200.0, "p90": 280.0}
    assert routine["ordered_to_final_minutes"] == {"median": 215.0, "p90": 299.0}
    assert (routine["sla_met"], routine["sla_compliance"]) == (1, 0.5)
    overall = summary["overall"]
    assert (overall["count"], overall["sla_met"], overall["sla_compliance"]) == (6, 4, 4 / 6)
    assert summary["definitions"] == DEFINITIONS
    assert "final_at <= due_at" in summary["definitions"]["sla_met"]
    assert "type 7" in summary["definitions"]["percentile_method"]


def test_seconds_become_fractional_minutes() -> None:
    s = TurnaroundSample("stat", T0, T0, T0 + timedelta(seconds=90), T0 + timedelta(minutes=1))
    summary = turnaround_summary([s])
    assert summary["by_priority"]["stat"]["queued_to_final_minutes"]["median"] == 1.5
    assert summary["by_priority"]["stat"]["sla_met"] == 0


def test_empty_summary() -> None:
    summary = turnaround_summary([])
    assert summary["by_priority"] == {}
    assert summary["overall"] == {
        "count": 0,
        "queued_to_final_minutes": {"median": None, "p90": None},
        "ordered_to_final_minutes": {"median": None, "p90": None},
        "sla_met": 0,
        "sla_compliance": None,
    }


def test_summary_rejects_time_travel() -> None:
    with pytest.raises(Invalid):
        turnaround_summary([TurnaroundSample("stat", T0, T0, T0 - timedelta(seconds=1), T0)])
    with pytest.raises(Invalid):
        turnaround_summary([TurnaroundSample("stat", T0, T0 + timedelta(minutes=5), T0 + timedelta(minutes=1), T0)])


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["stat", "urgent", "routine"]),
            st.integers(0, 600),
            st.integers(0, 600),
            st.integers(1, 600),
        ),
        max_size=30,
    )
)
def test_summary_counts_add_up(rows: list[tuple[str, int, int, int]]) -> None:
    summary = turnaround_summary([sample(*row) for row in rows])
    per = summary["by_priority"].values()
    assert sum(p["count"] for p in per) == summary["overall"]["count"] == len(rows)
    assert sum(p["sla_met"] for p in per) == summary["overall"]["sla_met"]
    assert summary["overall"]["sla_met"] == sum(1 for _, _, read, sla in rows if read <= sla)
