"""Recognition follows who made the data: the acquiring institution's level and quality control, the
reading center's, and a network's 同质化 declaration that lifts a site to its center's level."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from telenet.domain.recognition import ResultFacts, eligibility
from telenet.domain.tiers import Tier

FINAL = datetime(2026, 3, 1, tzinfo=UTC)
TOWNSHIP_DATA_READ_AT_COUNTY = ResultFacts(
    request_id=1,
    service="imaging",
    modality="DX",
    final_at=FINAL,
    producing_institution_code="K01",
    producing_tier=Tier.COUNTY,
    producing_center_code="K01-IMG",
    center_qc_failed=False,
    acquiring_institution_code="T01",
    acquiring_tier=Tier.TOWNSHIP,
)

ROWS = [
    # (changes to the result, accepting institution, its tier, verdict)
    ({}, "T02", Tier.TOWNSHIP, (True, "recognizable")),  # same level as the data
    ({}, "K02", Tier.COUNTY, (False, "lower level")),  # township data, county accepter
    ({"homogeneous": True}, "K02", Tier.COUNTY, (True, "recognizable")),  # 同质化: counts at the county
    ({"homogeneous": True}, "C01", Tier.CITY, (False, "lower level")),  # never above the reading center
    ({}, "T01", Tier.TOWNSHIP, (False, "same institution")),  # its own data
    ({}, "K01", Tier.COUNTY, (False, "same institution")),  # the reading center's own hospital
    ({"acquiring_qc_failed": True}, "T02", Tier.TOWNSHIP, (False, "acquiring institution failed quality control")),
    (
        {"acquiring_qc_failed": True, "homogeneous": True},
        "K02",
        Tier.COUNTY,
        (False, "acquiring institution failed quality control"),
    ),
    ({"center_qc_failed": True}, "T02", Tier.TOWNSHIP, (False, "quality control failed")),
    ({"acquiring_tier": Tier.CITY, "acquiring_institution_code": "C02"}, "K02", Tier.COUNTY, (True, "recognizable")),
    ({"producing_tier": Tier.TOWNSHIP}, "T02", Tier.TOWNSHIP, (True, "recognizable")),
    ({"producing_tier": Tier.TOWNSHIP, "acquiring_tier": Tier.COUNTY}, "K02", Tier.COUNTY, (False, "lower level")),
]


@pytest.mark.parametrize(("changes", "at", "tier", "verdict"), ROWS)
def test_who_made_the_data(changes: dict[str, object], at: str, tier: Tier, verdict: tuple[bool, str]) -> None:
    result = replace(TOWNSHIP_DATA_READ_AT_COUNTY, **changes)  # type: ignore[arg-type]
    got = eligibility(result, at_institution_code=at, at_tier=tier, now=FINAL + timedelta(days=1))
    assert (got.recognizable, got.reason) == verdict
