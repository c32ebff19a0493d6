"""Recognition eligibility (tiers, QC, validity window) and the recorded decision's reason codes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telenet.domain.errors import Invalid
from telenet.domain.recognition import (
    DEFAULT_VALIDITY_DAYS,
    EXPIRED,
    LABELS,
    LOWER_LEVEL,
    NO_VALIDITY_WINDOW,
    QC_FAILED,
    RECOGNITION_SCOPE,
    RECOGNIZABLE,
    SAME_INSTITUTION,
    NotRecognizedReason,
    ResultFacts,
    eligibility,
    validate_decision,
    validity_days_for,
)
from telenet.domain.tiers import Tier

FINAL = datetime(2024, 5, 1, 8, 30, tzinfo=UTC)
CT_RESULT = ResultFacts(
    request_id=1,
    service="imaging",
    modality="CT",
    final_at=FINAL,
    producing_institution_code="CNT1",
    producing_tier=Tier.COUNTY,
    producing_center_code="CNT1-IMG",
    center_qc_failed=False,
)
WINDOWS = {("imaging", "CT"): 90, ("imaging", None): 30, ("ecg", "ECG"): 7}


@pytest.mark.parametrize(
    ("changes", "at_code", "at_tier", "now", "recognizable", "reason"),
    [
        ({}, "TWN1", Tier.TOWNSHIP, FINAL, True, RECOGNIZABLE),  # lower level accepts from higher
        ({}, "VIL1", Tier.VILLAGE, FINAL, True, RECOGNIZABLE),
        ({}, "CNT2", Tier.COUNTY, FINAL, True, RECOGNIZABLE),  # same level, other institution
        ({}, "CTY1", Tier.CITY, FINAL, False, LOWER_LEVEL),  # producer below the accepter
        ({}, "PRV1", Tier.PROVINCE, FINAL, False, LOWER_LEVEL),
        ({}, "CNT1", Tier.COUNTY, FINAL, False, SAME_INSTITUTION),  # not "another institution"
        ({"center_qc_failed": True}, "TWN1", Tier.TOWNSHIP, FINAL, False, QC_FAILED),
        # window boundary, inclusive: exactly 90 days later is still in, one microsecond after is out
        ({}, "TWN1", Tier.TOWNSHIP, FINAL + timedelta(days=90), True, RECOGNIZABLE),
        ({}, "TWN1", Tier.TOWNSHIP, FINAL + timedelta(days=90, microseconds=1), False, EXPIRED),
        (
            {"modality": "DR"},
            "TWN1",
            Tier.TOWNSHIP,
            FINAL + timedelta(days=30),
            True,
            RECOGNIZABLE,
        ),  # fallback
        ({"modality": "DR"}, "TWN1", Tier.TOWNSHIP, FINAL + timedelta(days=31), False, EXPIRED),
        ({"service": "lab", "modality": "x"}, "TWN1", Tier.TOWNSHIP, FINAL, False, NO_VALIDITY_WINDOW),
        # the first failing check wins
        ({"center_qc_failed": True}, "CNT1", Tier.COUNTY, FINAL, False, SAME_INSTITUTION),
        ({"center_qc_failed": True}, "CTY1", Tier.CITY, FINAL, False, QC_FAILED),
        ({}, "CTY1", Tier.CITY, FINAL + timedelta(days=365), False, LOWER_LEVEL),
    ],
)
def test_eligibility_table(
    changes: dict[str, object], at_code: str, at_tier: Tier, now: datetime, recognizable: bool, reason: str
) -> None:
    result = replace(CT_RESULT, **changes)  # type: ignore[arg-type]
    got = eligibility(result, at_institution_code=at_code, at_tier=at_tier, now=now, validity_days=WINDOWS)
    assert (got.recognizable, got.reason) == (recognizable, reason)


def test_expires_at() -> None:
    got = eligibility(CT_RESULT, at_institution_code="TWN1", at_tier=Tier.TOWNSHIP, now=FINAL, validity_days=WINDOWS)
    assert got.expires_at == FINAL + timedelta(days=90)
    ecg = replace(CT_RESULT, service="ecg", modality="ECG")
    got = eligibility(ecg, at_institution_code="TWN1", at_tier=Tier.TOWNSHIP, now=FINAL, validity_days=WINDOWS)
    assert got.expires_at == FINAL + timedelta(days=7)
    got = eligibility(ecg, at_institution_code="TWN1", at_tier=Tier.TOWNSHIP, now=FINAL, validity_days={})
    assert (got.recognizable, got.reason, got.expires_at) == (False, NO_VALIDITY_WINDOW, FINAL)


@given(
    producer=st.sampled_from(list(Tier)),
    accepter=st.sampled_from(list(Tier)),
    offset=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=200)),
    qc_failed=st.booleans(),
    same=st.booleans(),
)
def test_eligibility_rule(producer: Tier, accepter: Tier, offset: timedelta, qc_failed: bool, same: bool) -> None:
    result = replace(CT_RESULT, producing_tier=producer, center_qc_failed=qc_failed)
    got = eligibility(
        result,
        at_institution_code="CNT1" if same else "OTHER",
        at_tier=accepter,
        now=FINAL + offset,
        validity_days=WINDOWS,
    )
    expected = not same and not qc_failed and producer.rank <= accepter.rank and offset <= timedelta(days=90)
    assert got.recognizable is expected
    assert got.expires_at == FINAL + timedelta(days=90)


def test_default_windows() -> None:
    assert validity_days_for(DEFAULT_VALIDITY_DAYS, "lab", "chemistry") == 30
    assert validity_days_for(DEFAULT_VALIDITY_DAYS, "lab", "hba1c") == 60
    assert validity_days_for(DEFAULT_VALIDITY_DAYS, "lab", "electrolytes") == 7
    assert validity_days_for(DEFAULT_VALIDITY_DAYS, "lab", "unknown-item") == 30
    assert validity_days_for(DEFAULT_VALIDITY_DAYS, "imaging", "CT") == 90
    assert validity_days_for(DEFAULT_VALIDITY_DAYS, "imaging", "XA") == 30
    assert validity_days_for(DEFAULT_VALIDITY_DAYS, "ecg", "ECG") == 7
    assert validity_days_for(DEFAULT_VALIDITY_DAYS, "consultation", None) is None  # an opinion is no exam
    assert all(isinstance(days, int) and days > 0 for days in DEFAULT_VALIDITY_DAYS.values())
    got = eligibility(CT_RESULT, at_institution_code="TWN1", at_tier=Tier.TOWNSHIP, now=FINAL)
    assert got.expires_at == FINAL + timedelta(days=90)


def test_eligibility_rejects_mixed_clocks_and_bad_windows() -> None:
    with pytest.raises(Invalid):
        eligibility(CT_RESULT, at_institution_code="T", at_tier=Tier.TOWNSHIP, now=datetime(2024, 5, 2))
    with pytest.raises(Invalid):
        eligibility(
            CT_RESULT,
            at_institution_code="T",
            at_tier=Tier.TOWNSHIP,
            now=FINAL,
            validity_days={("imaging", "CT"): -1},
        )


def test_scope_is_data_not_conclusion() -> None:
    assert RECOGNITION_SCOPE == "exam data and images, not the physician's conclusion"


def test_reason_codes_are_exactly_the_policy_list() -> None:
    assert [r.value for r in NotRecognizedReason] == [
        "condition_changed",
        "fast_changing_value",
        "before_major_procedure",
        "emergency",
        "forensic",
        "patient_request",
        "quality_control_failed",
        "expired",
        "physician_judgement",
    ]
    assert set(LABELS) == set(NotRecognizedReason)
    assert LABELS[NotRecognizedReason.CONDITION_CHANGED] == "病情变化"
    assert LABELS[NotRecognizedReason.FORENSIC] == "司法、伤残及病退等鉴定"
    assert NotRecognizedReason.EXPIRED.label == "超出有效期"
    assert len(set(LABELS.values())) == len(LABELS)


@pytest.mark.parametrize("code", [r.value for r in NotRecognizedReason])
def test_each_reason_code_validates(code: str) -> None:
    note = "复查原因已告知患者" if code == "physician_judgement" else None
    assert validate_decision("not_recognized", code, note) is NotRecognizedReason(code)
    assert validate_decision("not_recognized", code, "说明") is NotRecognizedReason(code)


@pytest.mark.parametrize(
    ("decision", "reason_code", "note", "field"),
    [
        ("recognized", "expired", None, "reason_code"),
        ("recognized", "", None, "reason_code"),
        ("not_recognized", None, "note only", "reason_code"),
        ("not_recognized", "too_old", None, "reason_code"),
        ("not_recognized", "EXPIRED", None, "reason_code"),
        ("not_recognized", "physician_judgement", None, "note"),
        ("not_recognized", "physician_judgement", "   ", "note"),
        ("not_recognized", "expired", "x" * 2001, "note"),
        ("accepted", None, None, "decision"),
        ("", None, None, "decision"),
    ],
)
def test_invalid_decisions(decision: str, reason_code: str | None, note: str | None, field: str) -> None:
    with pytest.raises(Invalid) as raised:
        validate_decision(decision, reason_code, note)
    assert raised.value.details == {"field": field}


def test_recognized_decision() -> None:
    assert validate_decision("recognized", None, None) is None
    assert validate_decision("recognized", None, "影像资料完整") is None
