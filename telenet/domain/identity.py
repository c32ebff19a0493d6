"""Does the patient of a study contradict the patient of a request? (id, name, birth date, sex)

A field counts only when both sides have it: a missing value is not a contradiction, a different one is.
Names compare without separators and spaces, against every representation the study carries (alphabetic,
ideographic, phonetic), so ``Zhang^San=张^三`` matches 张三.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

UNKNOWN_SEXES = frozenset({"", "U", "O"})


@dataclass(frozen=True)
class PatientFacts:
    patient_id: str | None = None
    name: str | None = None
    birth_date: date | None = None
    sex: str | None = None


def _squash(text: str) -> str:
    return "".join(ch for ch in text if ch not in "^ \t=").casefold()


def name_forms(name: str) -> set[str]:
    return {_squash(group) for group in name.split("=") if _squash(group)}


def parse_compact_date(text: str | None) -> date | None:
    """``YYYYMMDD`` (or ISO ``YYYY-MM-DD``) as a date; None when absent or not a date."""
    if not text:
        return None
    digits = text.strip().replace("-", "")
    try:
        return date(int(digits[0:4]), int(digits[4:6]), int(digits[6:8])) if len(digits) == 8 else None
    except ValueError:
        return None


def contradictions(expected: PatientFacts, found: PatientFacts) -> list[str]:
    """The fields in which ``found`` (the study) contradicts ``expected`` (the request), in a fixed order."""
    fields: list[str] = []
    if expected.patient_id and found.patient_id and expected.patient_id.strip() != found.patient_id.strip():
        fields.append("patient_id")
    if expected.name and found.name:
        forms = name_forms(found.name)
        if forms and _squash(expected.name) not in forms:
            fields.append("name")
    if expected.birth_date and found.birth_date and expected.birth_date != found.birth_date:
        fields.append("birth_date")
    mine, theirs = (expected.sex or "").upper(), (found.sex or "").upper()
    if mine not in UNKNOWN_SEXES and theirs not in UNKNOWN_SEXES and mine != theirs:
        fields.append("sex")
    return fields
