"""The pure parts of the assessment and recognition-window rules: yuan formatting, validity overrides,
SLA compliance with breaches, critical acknowledgement, recognition and fee summaries, CSV flattening."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telenet.domain import assessment as a
from telenet.domain.errors import Invalid
from telenet.domain.recognition import DEFAULT_VALIDITY_DAYS
from telenet.domain.recognition_windows import parse_override_key, validity_windows

T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.mark.parametrize(
    ("fen", "text"), [(0, "0.00"), (1, "0.01"), (99, "0.99"), (100, "1.00"), (12345, "123.45"), (-5, "-0.05")]
)
def test_yuan(fen: int, text: str) -> None:
    assert a.yuan(fen) == text


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_yuan_round_trips_exactly(fen: int) -> None:
    text = a.yuan(fen)
    sign = -1 if text.startswith("-") else 1
    whole, cents = text.lstrip("-").split(".")
    assert sign * (int(whole) * 100 + int(cents)) == fen and len(cents) == 2


def test_validity_windows() -> None:
    assert validity_windows([]) == dict(DEFAULT_VALIDITY_DAYS)
    merged = validity_windows([{"imaging:DX": 60, "ecg:ECG": 3}, {"imaging:DX": 45}, {}])
    assert merged[("imaging", "DX")] == 45, "the shortest of the shared networks' overrides"
    assert merged[("ecg", "ECG")] == 3 and merged[("imaging", "CT")] == DEFAULT_VALIDITY_DAYS[("imaging", "CT")]
    assert validity_windows([{"imaging:*": 10}])[("imaging", None)] == 10
    assert parse_override_key("imaging") == ("imaging", None)
    with pytest.raises(Invalid):
        validity_windows([{"imaging:DX": -1}])
    with pytest.raises(Invalid):
        validity_windows([{":DX": 3}])


def test_sla_compliance_counts_breaches_before_an_escalation() -> None:
    on_time = a.FinishedRequest("urgent", at(0), at(5), at(30), at(65), breached=False)
    at_deadline = a.FinishedRequest("urgent", at(0), at(5), at(65), at(65), breached=False)
    late = a.FinishedRequest("urgent", at(0), at(5), at(66), at(65), breached=False)
    escalated = a.FinishedRequest("urgent", at(0), at(5), at(80), at(125), breached=True)
    summary = a.turnaround([on_time, at_deadline, late, escalated])
    urgent = summary["by_priority"]["urgent"]
    assert (urgent["sla_met"], urgent["sla_compliance"]) == (2, 0.5)
    assert summary["overall"]["sla_met"] == 2
    assert urgent["queued_to_final_minutes"] == {"median": 60.5, "p90": 70.8}
    assert "escalated" in summary["definitions"]["sla_met"]
    empty = a.turnaround([])
    assert empty["overall"]["sla_compliance"] is None and empty["by_priority"] == {}


def test_critical_findings_summary() -> None:
    found = a.critical_findings(
        [
            a.CriticalSample(at(0), at(8), 0),
            a.CriticalSample(at(0), at(20), 1),
            a.CriticalSample(at(0), None, 2),
        ]
    )
    assert (found["raised"], found["acknowledged"], found["unacknowledged"], found["escalated"]) == (3, 2, 1, 2)
    assert found["acknowledgement_minutes"] == {"median": 14.0, "p90": 18.8}
    assert a.critical_findings([])["acknowledgement_minutes"] == {"median": None, "p90": None}


def test_recognition_and_fee_summaries() -> None:
    rec = a.recognition(
        [
            a.DecisionSample("recognized", None, 3000),
            a.DecisionSample("recognized", None, None),
            a.DecisionSample("not_recognized", "emergency", None),
            a.DecisionSample("not_recognized", "emergency", None),
        ]
    )
    assert (rec["decisions"], rec["recognized"], rec["recognition_rate"], rec["fees_avoided_fen"]) == (4, 2, 0.5, 3000)
    assert rec["not_recognized_by_reason"] == {"emergency": {"label": "急诊、急救等紧急状态", "count": 2}}
    assert a.recognition([])["recognition_rate"] is None
    money = a.fee_totals([a.FeeSample(3000, 900, 2100, False), a.FeeSample(-3000, -900, -2100, True)], 2)
    assert (money["charges"], money["refunds"], money["gross_fen"], money["finals_without_fee"]) == (1, 1, 0, 2)


def test_volumes_order_and_flatten() -> None:
    vols = a.volumes(
        [
            a.OrderedRequest("consultation", "routine", "village", "final"),
            a.OrderedRequest("imaging", "stat", "township", "queued"),
            a.OrderedRequest("imaging", "routine", "township", "ordered"),
        ]
    )
    assert list(vols["by_kind"]) == ["imaging", "consultation"]
    assert list(vols["by_priority"]) == ["stat", "routine"]
    assert list(vols["by_requesting_tier"]) == ["township", "village"]
    assert list(vols["by_state_now"]) == ["ordered", "queued", "final"]
    rows = a.flatten({"a": {"b": 1, "c": None, "d": True}, "e": [1, 2], "f": 0.1 + 0.2})
    assert rows == [("a.b", "1"), ("a.c", ""), ("a.d", "true"), ("e", "1;2"), ("f", "0.30000000000000004")]
