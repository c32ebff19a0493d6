"""Routing over the demo network, table-driven, on both engines (DESIGN "Routing")."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, update

from telenet.domain.errors import Invalid
from telenet.services import requests
from telenet.services.auth import actor_for_username
from telenet.services.network import load_network
from telenet.services.registry_snapshot import bump_version
from telenet.store.models import Center
from tests.factories import order

CASES = [
    # (requester, order, expected center, words in the reason)
    ("township_doc", order("imaging", modality="DX"), "NL-C01-K01-IMG", "county"),
    ("village_doc", order("ecg", modality="ECG"), "NL-C01-K01-ECG", "county"),
    ("township_doc3", order("ecg", modality="ECG"), "NL-C02-ECG", "city"),
    ("township_doc", order("imaging", modality="MR"), "NL-C01-IMG", "city"),
    ("township_doc", order("consultation", modality=None, subspecialty="cardiology"), "NL-C01-CONS", "city"),
    ("township_doc", order("imaging", modality="CT", priority="stat", body_part="HEAD"), "NL-C01-IMG", "卒中"),
]


@pytest.mark.parametrize(("username", "body", "center", "reason"), CASES)
async def test_route_table(demo_hub: Any, username: str, body: dict[str, Any], center: str, reason: str) -> None:
    actor = await actor_for_username(demo_hub, username)
    view = await requests.submit(demo_hub, actor, body)
    assert view["center"]["code"] == center
    assert reason in view["route"][0]["reason"]
    assert view["route"][0]["considered"], "every candidate is kept with its reason"


async def test_no_agreement_is_a_422_with_reason(demo_hub: Any) -> None:
    actor = await actor_for_username(demo_hub, "township_doc2")
    with pytest.raises(Invalid) as caught:
        await requests.submit(demo_hub, actor, order("imaging"))
    assert caught.value.code == "no-route"
    assert "agreement" in caught.value.message


async def test_closed_center_is_skipped(demo_hub: Any) -> None:
    # Sunday 10:00 in Asia/Shanghai: the city consultation center (mon-fri, sat morning) is closed.
    demo_hub.clock.set(datetime(2026, 3, 1, 2, 0, tzinfo=UTC))
    actor = await actor_for_username(demo_hub, "township_doc")
    view = await requests.submit(demo_hub, actor, order("consultation", modality=None, subspecialty="cardiology"))
    assert view["center"]["code"] == "NL-PROV-CONS"
    city = next(c for c in view["route"][0]["considered"] if c["center"] == "NL-C01-CONS")
    assert "closed" in city["reason"]


async def test_full_center_loses_to_an_open_one_of_the_same_tier(demo_hub: Any, demo_doc: dict[str, Any]) -> None:
    # The township also signs an agreement with the neighbouring county hospital (K02).
    doc = copy.deepcopy(demo_doc)
    county_net = next(n for n in doc["networks"] if n["code"] == "NET-NL-C01-K02")
    county_net["members"].append("NL-C01-K01-T01")
    county_net["agreements"].append(
        {
            "member": "NL-C01-K01-T01",
            "valid_from": "2025-01-01",
            "valid_to": "2028-12-31",
            "services": ["imaging"],
            "invited_share_bp": 7000,
        }
    )
    await load_network(demo_hub, doc)
    async with demo_hub.sessions() as session:
        await session.execute(update(Center).where(Center.code == "NL-C01-K01-IMG").values(capacity=1))
        await bump_version(session, demo_hub.clock.now())  # as every registry change does
        await session.commit()
    demo_hub.registry.invalidate()
    actor = await actor_for_username(demo_hub, "township_doc")
    first = await requests.submit(demo_hub, actor, order("imaging", patient_id="A"))
    assert first["center"]["code"] == "NL-C01-K01-IMG"
    second = await requests.submit(demo_hub, actor, order("imaging", patient_id="B"))
    assert second["center"]["code"] == "NL-C01-K02-IMG"
    own = next(c for c in second["route"][0]["considered"] if c["center"] == "NL-C01-K01-IMG")
    assert "full" in own["reason"]


async def test_expired_agreement_does_not_count(demo_hub: Any) -> None:
    demo_hub.clock.set(datetime(2029, 3, 1, 2, 0, tzinfo=UTC))
    actor = await actor_for_username(demo_hub, "township_doc")
    with pytest.raises(Invalid) as caught:
        await requests.submit(demo_hub, actor, order("imaging"))
    assert caught.value.code == "no-route"
    async with demo_hub.sessions() as session:
        assert (await session.execute(select(Center).limit(1))).scalar_one()
