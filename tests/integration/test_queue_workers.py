"""Claims decided by the database, leases, SLA breaches and critical findings (危急值), on both engines."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any

import pytest

from telenet.domain.errors import Conflict, Forbidden
from telenet.schemas import validate
from telenet.services import queue, reports, requests
from telenet.services.auth import actor_for_username, add_user
from telenet.services.sweeper import sweep_once
from tests.conftest import ROOT
from tests.factories import order

FINAL = {"findings": "窦性心律。", "impression": "急性下壁心肌梗死。", "final": True}


async def queued(hub: Any, body: dict[str, Any] | None = None, user: str = "township_doc") -> dict[str, Any]:
    requester = await actor_for_username(hub, user)
    view = await requests.submit(hub, requester, body or order())
    if view["state"] == "ordered":
        view = await requests.data_complete(hub, await actor_for_username(hub, "his_t01"), view["id"])
    return view


async def test_twenty_concurrent_claims_exactly_one_wins(demo_hub: Any) -> None:
    view = await queued(demo_hub)
    readers = []
    for i in range(20):
        name = f"racer{i:02d}"
        await add_user(
            demo_hub,
            username=name,
            role="reader",
            institution="NL-C01-K01",
            password=None,
            centers=["NL-C01-K01-IMG"],
            practice_since=None,
        )
        readers.append(await actor_for_username(demo_hub, name))

    async def attempt(actor: Any) -> str:
        try:
            await queue.claim(demo_hub, actor, view["id"])
            return "won"
        except Conflict:
            return "conflict"

    results = await asyncio.gather(*(attempt(r) for r in readers))
    assert results.count("won") == 1 and results.count("conflict") == 19
    final = await requests.get(demo_hub, readers[results.index("won")], view["id"])
    assert final["claimed_by"] == readers[results.index("won")].username


async def test_expired_lease_returns_the_request_to_the_queue(demo_hub: Any) -> None:
    view = await queued(demo_hub)
    reader = await actor_for_username(demo_hub, "county_reader")
    claimed = await queue.claim(demo_hub, reader, view["id"])
    assert claimed["claim_expires_at"] == "2026-03-02T03:00:00+00:00", "routine lease: 60 minutes"
    demo_hub.clock.advance(minutes=59)
    assert (await sweep_once(demo_hub)).leases_expired == 0
    demo_hub.clock.advance(minutes=2)
    assert (await sweep_once(demo_hub)).leases_expired == 1
    after = await requests.get(demo_hub, reader, view["id"])
    assert after["state"] == "queued" and after["claimed_by"] is None
    with pytest.raises(Conflict):
        await reports.report(demo_hub, reader, view["id"], FINAL)
    other = await actor_for_username(demo_hub, "junior_reader")
    assert (await queue.claim(demo_hub, other, view["id"]))["claimed_by"] == "junior_reader"


async def test_sla_breach_escalates_up_a_tier_and_records_why(demo_hub: Any) -> None:
    view = await queued(demo_hub, order(priority="stat"))
    assert view["due_at"] == "2026-03-02T02:30:00+00:00"
    demo_hub.clock.advance(minutes=29)
    assert (await sweep_once(demo_hub)).breaches == 0
    demo_hub.clock.advance(minutes=2)
    assert (await sweep_once(demo_hub)).breaches == 1
    reader = await actor_for_username(demo_hub, "city_reader")
    after = await requests.get(demo_hub, reader, view["id"])
    assert after["center"]["code"] == "NL-C01-IMG" and after["state"] == "queued"
    assert after["sla_breached_at"] == "2026-03-02T02:31:00+00:00"
    assert after["route"][-1]["action"] == "escalate" and after["route"][-1]["by"] == "system"
    assert after["due_at"] == "2026-03-02T03:01:00+00:00", "the SLA clock restarts at the new center"
    assert (await sweep_once(demo_hub)).breaches == 0, "a breach is handled once"


async def test_breach_of_a_claimed_request_alerts_but_stays_with_its_reader(demo_hub: Any) -> None:
    view = await queued(demo_hub, order(priority="stat"))
    reader = await actor_for_username(demo_hub, "county_reader")
    await queue.claim(demo_hub, reader, view["id"])
    for _ in range(2):  # the reader renews the 15-minute STAT lease while working
        demo_hub.clock.advance(minutes=14)
        await queue.claim(demo_hub, reader, view["id"])
    demo_hub.clock.advance(minutes=3)
    assert (await sweep_once(demo_hub)).breaches == 1
    after = await requests.get(demo_hub, reader, view["id"])
    assert after["center"]["code"] == "NL-C01-K01-IMG" and after["claimed_by"] == "county_reader"
    assert after["sla_breached_at"] is not None


async def test_unacknowledged_critical_finding_escalates_until_acknowledged(demo_hub: Any) -> None:
    view = await queued(demo_hub, order("ecg", modality="ECG", priority="stat"))
    reader = await actor_for_username(demo_hub, "county_reader")
    await queue.claim(demo_hub, reader, view["id"])
    final = await reports.report(
        demo_hub, reader, view["id"], {**FINAL, "critical": True, "critical_items": ["ST段抬高型心肌梗死"]}
    )
    critical = final["critical_findings"][0]
    assert critical["deadline_at"] == "2026-03-02T02:15:00+00:00" and critical["escalation_level"] == 0

    demo_hub.clock.advance(minutes=16)
    assert (await sweep_once(demo_hub)).criticals_escalated == 1
    demo_hub.clock.advance(minutes=16)
    assert (await sweep_once(demo_hub)).criticals_escalated == 1

    with pytest.raises(Forbidden):
        await reports.acknowledge(demo_hub, reader, critical["id"], {"read_back_by": "读片医生"})
    clinic = await actor_for_username(demo_hub, "township_doc")
    acked = await reports.acknowledge(
        demo_hub, clinic, critical["id"], {"read_back_by": "值班护士李四", "read_back": "ST段抬高型心肌梗死"}
    )
    assert (acked["acknowledged_by"], acked["acknowledged_by_name"]) == ("township_doc", "李青山")
    validate("api/critical-finding", acked)
    seen = await requests.get(demo_hub, clinic, view["id"])
    assert [(c["acknowledged_by"], c["acknowledged_by_name"]) for c in seen["critical_findings"]] == [
        ("township_doc", "李青山")
    ], "the request view names the acknowledger the same way"
    assert acked["escalation_level"] == 2 and acked["read_back_by"] == "值班护士李四"
    events = [step["event"] for step in acked["timeline"]]
    assert events == ["critical.raised", "critical.escalated", "critical.escalated", "critical.acknowledged"]
    level2 = acked["timeline"][2]
    assert level2["notified"] == ["county_coord"], "the second escalation reaches the reading center's coordinator"
    with pytest.raises(Conflict):
        await reports.acknowledge(demo_hub, clinic, critical["id"], {"read_back_by": "again", "read_back": "x"})
    demo_hub.clock.advance(minutes=60)
    assert (await sweep_once(demo_hub)).criticals_escalated == 0


async def test_consultation_is_queued_at_once_and_has_a_thread(demo_hub: Any) -> None:
    from telenet.services import consultation

    clinic = await actor_for_username(demo_hub, "township_doc")
    view = await requests.submit(
        demo_hub,
        clinic,
        order(
            "consultation",
            modality=None,
            subspecialty="cardiology",
            priority="urgent",
            scheduled_at="2026-03-02T16:00:00+08:00",
            participants=["province_reader"],
            invited_centers=["NL-PROV-CONS"],
        ),
    )
    assert view["state"] == "queued" and view["center"]["code"] == "NL-C01-CONS"
    assert view["due_at"] == "2026-03-03T02:00:00+00:00", "urgent consultation within 24 h"
    assert view["participants"] == ["province_reader"]
    specialist = await actor_for_username(demo_hub, "city_reader")
    accepted = await queue.claim(demo_hub, specialist, view["id"])
    assert accepted["state"] == "claimed"
    await consultation.post_message(demo_hub, clinic, view["id"], "患者胸痛加重，附心电图。")
    guest = await actor_for_username(demo_hub, "province_reader")
    await consultation.post_message(demo_hub, guest, view["id"], "建议急查肌钙蛋白。")
    outsider = await actor_for_username(demo_hub, "township_doc3")
    with pytest.raises(Forbidden):
        await consultation.post_message(demo_hub, outsider, view["id"], "?")
    thread = await consultation.list_messages(demo_hub, specialist, view["id"])
    assert [m["body"] for m in thread["items"]] == ["患者胸痛加重，附心电图。", "建议急查肌钙蛋白。"]
    # The wished time was proposed with the order: the consultant center agrees it, then holds the session.
    await consultation.agree_time(demo_hub, specialist, view["id"])
    await consultation.start(demo_hub, specialist, view["id"])
    opinion = await reports.report(
        demo_hub,
        specialist,
        view["id"],
        {"findings": "会诊意见：考虑不稳定型心绞痛。", "impression": "建议转上级医院。", "final": True},
    )
    assert opinion["state"] == "final" and opinion["reports"][0]["status"] == "final"


async def test_declining_a_consultation_needs_a_reason(demo_hub: Any) -> None:
    clinic = await actor_for_username(demo_hub, "township_doc")
    view = await requests.submit(demo_hub, clinic, order("consultation", modality=None))
    specialist = await actor_for_username(demo_hub, "city_reader")
    await queue.claim(demo_hub, specialist, view["id"])
    declined = await queue.return_request(demo_hub, specialist, view["id"], "out_of_scope", "请转神经内科")
    assert declined["state"] == "returned" and declined["return"]["note"] == "请转神经内科"


def documented_lease_minutes() -> dict[str, int]:
    """The claim leases as docs/policy.md states them ("Claim leases ...: stat 15, urgent 30, routine 60 min")."""
    text = (ROOT / "docs" / "policy.md").read_text(encoding="utf-8")
    found = re.search(r"Claim leases[^:]*: stat (\d+), urgent (\d+), routine (\d+) min", text)
    assert found, "docs/policy.md states the default claim leases"
    return dict(zip(("stat", "urgent", "routine"), map(int, found.groups()), strict=True))


@pytest.mark.parametrize("priority", ["stat", "urgent", "routine"])
async def test_a_claim_under_the_default_lease_returns_to_the_queue_at_the_documented_time(
    demo_hub: Any, priority: str
) -> None:
    """The hub is built from default settings: the lease is the one docs/policy.md documents, and the sweeper
    puts the request back in the queue once it has run out, not before."""
    minutes = documented_lease_minutes()[priority]
    view = await queued(demo_hub, order(priority=priority))
    reader = await actor_for_username(demo_hub, "county_reader")
    claimed = await queue.claim(demo_hub, reader, view["id"])
    claimed_at = demo_hub.clock.now()
    assert claimed["claim_expires_at"] == (claimed_at + timedelta(minutes=minutes)).isoformat()
    demo_hub.clock.advance(minutes=minutes - 1)
    assert (await sweep_once(demo_hub)).leases_expired == 0
    still = await requests.get(demo_hub, reader, view["id"])
    assert (still["state"], still["claimed_by"]) == ("claimed", "county_reader")
    demo_hub.clock.advance(minutes=2)
    assert (await sweep_once(demo_hub)).leases_expired == 1
    after = await requests.get(demo_hub, reader, view["id"])
    assert (after["state"], after["claimed_by"], after["claim_expires_at"]) == ("queued", None, None)
    worklist = await queue.worklist(demo_hub, reader, "NL-C01-K01-IMG")
    assert [(i["request_id"], i["state"], i["claimed_by"]) for i in worklist["items"]] == [(view["id"], "queued", None)]


async def test_lease_length_is_configurable(demo_hub: Any) -> None:
    import dataclasses

    demo_hub.options = dataclasses.replace(demo_hub.options, lease_minutes={"stat": 5, "urgent": 10, "routine": 20})
    view = await queued(demo_hub)
    claimed = await queue.claim(demo_hub, await actor_for_username(demo_hub, "county_reader"), view["id"])
    assert claimed["claim_expires_at"] == "2026-03-02T02:20:00+00:00"
