"""Order control as a use case, on both databases: XO moves a queued request's due time to its new priority
and is refused once claimed; DC cancels what is not claimed, returns a claimed read (or is refused, as the
policy says) and cannot touch a final one; order status rows join the outbox only for HL7 orders of a
facility that asked for them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from telenet.domain.errors import Conflict
from telenet.services import auth, order_control, queue, reports, requests
from telenet.services.network import load_network
from telenet.store.models import HL7OutboxItem, Institution, Request
from tests.factories import order

TOWNSHIP = "NL-C01-K01-T01"


async def submitted(hub: Any, serial: int, *, placer: str | None = "HIS-1", queued: bool = True) -> int:
    doc = await auth.actor_for_username(hub, "township_doc")
    view = await requests.submit(hub, doc, order(serial=serial, patient_id=f"P{serial}"))
    async with hub.sessions() as session:
        await order_control.record_order_numbers(session, view["id"], placer, None)
        await session.commit()
    if queued:
        await requests.data_complete(hub, await auth.actor_for_username(hub, "his_t01"), view["id"], "api")
    return int(view["id"])


async def row(hub: Any, request_id: int) -> Request:
    async with hub.sessions() as session:
        found = await session.get(Request, request_id)
        assert found is not None
        return found


async def test_xo_moves_the_due_time_and_is_refused_once_claimed(demo_hub: Any) -> None:
    request_id = await submitted(demo_hub, 1)
    his = await auth.actor_for_username(demo_hub, "his_t01")
    before = await row(demo_hub, request_id)
    assert before.queued_at is not None and before.due_at is not None
    await order_control.change(demo_hub, his, request_id, {"priority": "stat", "body_part": "胸部"}, "test")
    after = await row(demo_hub, request_id)
    assert (after.priority, after.priority_rank, after.body_part) == ("stat", 0, "胸部")
    assert after.due_at is not None and after.due_at < before.due_at
    assert after.due_at - after.queued_at <= timedelta(minutes=30)  # type: ignore[operator]

    await queue.claim(demo_hub, await auth.actor_for_username(demo_hub, "county_reader"), request_id)
    with pytest.raises(Conflict, match="claimed by a reader") as refused:
        await order_control.change(demo_hub, his, request_id, {"clinical_question": "复查"}, "test")
    assert refused.value.code == "change-after-claim"
    assert (await row(demo_hub, request_id)).clinical_question == after.clinical_question


async def test_dc_cancels_returns_or_is_refused(demo_hub: Any) -> None:
    his = await auth.actor_for_username(demo_hub, "his_t01")
    reader = await auth.actor_for_username(demo_hub, "county_reader")
    waiting = await submitted(demo_hub, 2, queued=False)
    await order_control.discontinue(demo_hub, his, waiting, "患者转院", "test")
    assert (await row(demo_hub, waiting)).state == "cancelled"

    claimed = await submitted(demo_hub, 3)
    await queue.claim(demo_hub, reader, claimed)
    with pytest.raises(Conflict, match="refuses DC once claimed"):
        await order_control.discontinue(demo_hub, his, claimed, "患者转院", "test", policy="refuse")
    assert (await row(demo_hub, claimed)).state == "claimed"
    await order_control.discontinue(demo_hub, his, claimed, "患者转院", "test", policy="return")
    returned = await row(demo_hub, claimed)
    assert (returned.state, returned.return_reason) == ("returned", "other")
    assert returned.return_note is not None and "患者转院" in returned.return_note

    final = await submitted(demo_hub, 4)
    await queue.claim(demo_hub, reader, final)
    await reports.report(demo_hub, reader, final, {"findings": "未见异常。", "impression": "正常。", "final": True})
    with pytest.raises(Conflict):
        await order_control.discontinue(demo_hub, his, final, None, "test")
    assert (await row(demo_hub, final)).state == "final"


async def status_rows(hub: Any) -> list[tuple[int, str]]:
    async with hub.sessions() as session:
        rows = await session.execute(
            select(HL7OutboxItem.request_id, HL7OutboxItem.payload)
            .where(HL7OutboxItem.message_kind == "status")
            .order_by(HL7OutboxItem.id)  # the order they were written in (PostgreSQL keeps no other)
        )
        return [(request_id, payload["order_status"]) for request_id, payload in rows.all()]


async def test_status_rows_only_for_hl7_orders_of_facilities_that_want_them(
    demo_hub: Any, demo_doc: dict[str, Any]
) -> None:
    async with demo_hub.sessions() as session:
        await session.execute(update(Institution).where(Institution.code == TOWNSHIP).values(hl7_port=1))
        await session.commit()
    await submitted(demo_hub, 5)
    assert await status_rows(demo_hub) == [], "hl7_order_status is off by default: only the ORU"
    township = next(i for i in demo_doc["institutions"] if i["code"] == TOWNSHIP)
    township |= {"hl7_order_status": True, "hl7_ack_mode": "orr", "hl7_destination": {"host": "127.0.0.1", "port": 1}}
    await load_network(demo_hub, demo_doc)  # the per-facility options come from the network file
    async with demo_hub.sessions() as session:
        inst = (await session.execute(select(Institution).where(Institution.code == TOWNSHIP))).scalar_one()
        assert (inst.hl7_order_status, inst.hl7_ack_mode) == (True, "orr")
    await submitted(demo_hub, 6, placer=None)
    assert await status_rows(demo_hub) == [], "a request ordered over REST is unknown to the HIS"
    request_id = await submitted(demo_hub, 7)
    await queue.claim(demo_hub, await auth.actor_for_username(demo_hub, "county_reader"), request_id)
    assert await status_rows(demo_hub) == [(request_id, "scheduled"), (request_id, "in_progress")]
