"""Records are never deleted: reloading a network file without an agreement ends the agreement's validity
(yesterday, local day) instead of deleting it, routing follows the agreements in force, and listing it
again restores it. Both engines."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

from sqlalchemy import select

from telenet.services import requests
from telenet.services.auth import actor_for_username
from telenet.services.network import load_network
from telenet.store.models import Agreement, Institution, Network
from tests.factories import order

MEMBER = "NL-C01-K01-T01"


async def agreement_of(hub: Any, network: str, member: str) -> Agreement | None:
    async with hub.sessions() as session:
        row: Agreement | None = (
            await session.execute(
                select(Agreement)
                .join(Network, Network.id == Agreement.network_id)
                .join(Institution, Institution.id == Agreement.member_id)
                .where(Network.code == network, Institution.code == member)
            )
        ).scalar_one_or_none()
        return row


async def test_reloading_without_an_agreement_ends_it_and_routing_follows(
    demo_hub: Any, demo_doc: dict[str, Any]
) -> None:
    before = await agreement_of(demo_hub, "NET-NL-C01-K01", MEMBER)
    assert before is not None and before.valid_to > date(2026, 3, 2)
    clinic = await actor_for_username(demo_hub, "township_doc")
    first = await requests.submit(demo_hub, clinic, order(patient_id="H1", serial=41))
    assert first["center"]["code"] == "NL-C01-K01-IMG"

    doc = copy.deepcopy(demo_doc)
    county = next(n for n in doc["networks"] if n["code"] == "NET-NL-C01-K01")
    county["agreements"] = [a for a in county["agreements"] if a["member"] != MEMBER]
    report = await load_network(demo_hub, doc)
    assert report.counts["agreements"]["ended"] == 1
    ended = await agreement_of(demo_hub, "NET-NL-C01-K01", MEMBER)
    assert ended is not None and ended.id == before.id, "kept, not deleted"
    assert (ended.valid_from, ended.valid_to) == (before.valid_from, date(2026, 3, 1))

    second = await requests.submit(demo_hub, clinic, order(patient_id="H2", serial=42))
    assert second["center"]["code"] != "NL-C01-K01-IMG", "no agreement in force with the county any more"
    again = await load_network(demo_hub, doc)
    assert "ended" not in again.counts["agreements"], "ending is done once"

    await load_network(demo_hub, demo_doc)
    restored = await agreement_of(demo_hub, "NET-NL-C01-K01", MEMBER)
    assert restored is not None and restored.valid_to == before.valid_to
    third = await requests.submit(demo_hub, clinic, order(patient_id="H3", serial=43))
    assert third["center"]["code"] == "NL-C01-K01-IMG"
