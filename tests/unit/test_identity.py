"""Patient contradiction rules between a request and a study."""

from __future__ import annotations

from datetime import date

import pytest

from telenet.domain.identity import PatientFacts, contradictions, parse_compact_date

REQUEST = PatientFacts("TS0101-000123", "张三", date(1965, 3, 12), "M")


@pytest.mark.parametrize(
    ("study", "fields"),
    [
        (PatientFacts("TS0101-000123", "Zhang^San=张^三", date(1965, 3, 12), "M"), []),
        (PatientFacts(None, None, None, None), []),
        (PatientFacts("TS0101-000123", "张三", None, "U"), []),
        (PatientFacts("TS0101-000999", "李四", date(1970, 1, 1), "F"), ["patient_id", "name", "birth_date", "sex"]),
        (PatientFacts(" TS0101-000123 ", "Zhang^San", date(1965, 3, 12), "M"), ["name"]),
        (PatientFacts(None, "张^三", date(1965, 3, 13), None), ["birth_date"]),
    ],
)
def test_contradictions(study: PatientFacts, fields: list[str]) -> None:
    assert contradictions(REQUEST, study) == fields


def test_compact_dates() -> None:
    assert parse_compact_date("19650312") == date(1965, 3, 12)
    assert parse_compact_date("1965-03-12") == date(1965, 3, 12)
    assert (
        parse_compact_date("19651312") is None and parse_compact_date("") is None and parse_compact_date("1965") is None
    )
