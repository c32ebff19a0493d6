"""SLA minutes per modality and body part, and a center's own keys over them."""

from __future__ import annotations

import pytest

from telenet.domain.errors import Invalid
from telenet.domain.sla_rules import sla_minutes

CENTER = {"stat": 45, "urgent": 90, "routine": 300}

ROWS = [
    # (kind, priority, modality, body part, center table, minutes)
    ("imaging", "stat", "CT", "HEAD", CENTER, 30),  # emergency head CT
    ("imaging", "stat", "CT", "头颅", CENTER, 30),
    ("imaging", "stat", "MR", "brain", CENTER, 30),
    ("imaging", "stat", "CT", "CHEST", CENTER, 60),  # other emergency CT/MR
    ("imaging", "stat", "MR", None, CENTER, 60),
    ("imaging", "stat", "DX", "CHEST", CENTER, 30),  # emergency X-ray
    ("imaging", "routine", "DX", "CHEST", CENTER, 120),  # routine X-ray 2 h
    ("imaging", "routine", "CR", None, CENTER, 120),
    ("imaging", "routine", "CT", "ABDOMEN", CENTER, 240),  # routine CT/MR 4 h
    ("imaging", "routine", "US", "ABDOMEN", CENTER, 300),  # no rule: the center's routine
    ("imaging", "urgent", "CT", "HEAD", CENTER, 90),  # no urgent rule: the center's urgent
    ("imaging", "stat", "US", None, None, 30),  # no rule, no center table: the service default
    ("ecg", "stat", "ECG", None, None, 10),  # remote ECG about 10 min
    ("ecg", "urgent", "ECG", None, {"stat": 10, "urgent": 10, "routine": 30}, 10),
    ("imaging", "stat", "CT", "HEAD", {**CENTER, "stat/CT/HEAD": 20}, 20),  # the center's body-part key
    ("imaging", "stat", "CT", "头颅", {**CENTER, "stat/CT/HEAD": 20}, 20),
    ("imaging", "stat", "CT", "CHEST", {**CENTER, "stat/CT": 50, "stat/CT/HEAD": 20}, 50),
    ("imaging", "routine", "DX", "CHEST", {**CENTER, "routine/DX": 90}, 90),
    ("consultation", "urgent", None, None, None, 1440),
]


@pytest.mark.parametrize(("kind", "priority", "modality", "body", "table", "minutes"), ROWS)
def test_sla_minutes_per_exam(
    kind: str, priority: str, modality: str | None, body: str | None, table: dict[str, int] | None, minutes: int
) -> None:
    assert sla_minutes(kind, priority, modality, body, table) == minutes


@pytest.mark.parametrize(
    "table", [{"asap/CT": 5}, {"stat/CT": 0}, {"stat/CT": True}, {"stat//HEAD": 5}, {"stat/CT/HEAD/X": 5}]
)
def test_bad_center_keys_are_refused(table: dict[str, int]) -> None:
    with pytest.raises(Invalid) as refused:
        sla_minutes("imaging", "stat", "CT", "HEAD", table)
    assert refused.value.code == "bad-sla"
