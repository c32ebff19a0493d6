"""Queues a coordinator can run, on both engines: a breached claim alerts its reader and the coordinators,
is released after the grace with its reason however often it is renewed, and a coordinator releases or
hands a request to a named reader of the center."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from telenet.domain.errors import Conflict, Forbidden, Invalid, TelenetError
from telenet.services import coordination, queue, requests
from telenet.services.auth import actor_for_username
from telenet.services.sweeper import sweep_once
from telenet.store.models import Event
from tests.factories import order


async def queued_stat_dx(hub: Any) -> dict[str, Any]:
    clinic = await actor_for_username(hub, "township_doc")
    view = await requests.submit(hub, clinic, order(priority="stat", patient_id="Q1", serial=3))
    return await requests.data_complete(hub, await actor_for_username(hub, "his_t01"), view["id"])


async def events_of(hub: Any, request_id: int, name: str) -> list[dict[str, Any]]:
    async with hub.sessions() as session:
        rows = await session.execute(
            select(Event.data).where(Event.request_id == request_id, Event.name == name).order_by(Event.id)
        )
        return list(rows.scalars().all())


async def test_a_breached_claim_is_released_after_the_grace_however_often_renewed(demo_hub: Any) -> None:
    view = await queued_stat_dx(demo_hub)
    t0 = demo_hub.clock.now()
    assert view["due_at"] == (t0 + timedelta(minutes=30)).isoformat(), "emergency X-ray: 30 min"
    reader = await actor_for_username(demo_hub, "county_reader")
    await queue.claim(demo_hub, reader, view["id"])
    expiries = []
    for minute in (14, 28, 31, 42, 44):
        demo_hub.clock.set(t0 + timedelta(minutes=minute))
        if minute == 31:
            assert (await sweep_once(demo_hub)).breaches == 1
            continue
        expiries.append((await queue.claim(demo_hub, reader, view["id"]))["claim_expires_at"])
    grace_end = (t0 + timedelta(minutes=45)).isoformat()
    assert (
        expiries
        == [(t0 + timedelta(minutes=29)).isoformat(), (t0 + timedelta(minutes=43)).isoformat()] + [grace_end] * 2
    ), "renewing never reaches past due + grace"
    (breach,) = await events_of(demo_hub, view["id"], "request.sla_breached")
    assert breach["alerted"] == ["county_reader", "county_coord"] and breach["claim_released_at"] == grace_end

    demo_hub.clock.set(t0 + timedelta(minutes=46))
    swept = await sweep_once(demo_hub)
    assert (swept.breached_claims_released, swept.leases_expired) == (1, 0)
    (released,) = await events_of(demo_hub, view["id"], "request.claim_released")
    assert (released["reason"], released["holder"], released["by"]) == ("sla-breach", "county_reader", "system")
    after = await requests.get(demo_hub, reader, view["id"])
    assert after["state"] == "queued" and after["claimed_by"] is None

    # claimed again when already breached: the grace runs from the claim
    junior = await actor_for_username(demo_hub, "junior_reader")
    demo_hub.clock.set(t0 + timedelta(minutes=50))
    again = await queue.claim(demo_hub, junior, view["id"])
    assert again["claim_expires_at"] == (t0 + timedelta(minutes=65)).isoformat()
    demo_hub.clock.set(t0 + timedelta(minutes=60))
    assert (await sweep_once(demo_hub)).breached_claims_released == 0
    demo_hub.clock.set(t0 + timedelta(minutes=66))
    assert (await sweep_once(demo_hub)).breached_claims_released == 1


REASSIGN = [
    # (coordinator, holder before, body, error, code, holder after)
    ("county_coord", "county_reader", {"to": "junior_reader", "reason": "主任指派"}, None, None, "junior_reader"),
    ("county_coord", None, {"to": "junior_reader", "reason": "主任指派"}, None, None, "junior_reader"),
    ("county_coord", "county_reader", {"to": None, "reason": "读片医生下班"}, None, None, None),
    ("county_coord", None, {"to": None, "reason": "x"}, Conflict, "illegal-transition", None),
    ("county_coord", "county_reader", {"to": "city_reader", "reason": "x"}, Invalid, "unknown-reader", "county_reader"),
    (
        "county_coord",
        "county_reader",
        {"to": "county_coord", "reason": "x"},
        Invalid,
        "unknown-reader",
        "county_reader",
    ),
    (
        "county_coord",
        "county_reader",
        {"to": "county_reader", "reason": "x"},
        Conflict,
        "already-claimed",
        "county_reader",
    ),
    (
        "county_coord",
        "county_reader",
        {"to": "junior_reader", "reason": " "},
        Invalid,
        "reason-missing",
        "county_reader",
    ),
    ("county_reader", "county_reader", {"to": "junior_reader", "reason": "x"}, Forbidden, "role", "county_reader"),
    ("city_coord", "county_reader", {"to": "junior_reader", "reason": "x"}, Forbidden, "scope", "county_reader"),
]


@pytest.mark.parametrize(("who", "holder", "body", "error", "code", "after"), REASSIGN)
async def test_coordinators_reassign(
    demo_hub: Any,
    who: str,
    holder: str | None,
    body: dict[str, Any],
    error: type[TelenetError] | None,
    code: str | None,
    after: str | None,
) -> None:
    view = await queued_stat_dx(demo_hub)
    if holder:
        await queue.claim(demo_hub, await actor_for_username(demo_hub, holder), view["id"])
    actor = await actor_for_username(demo_hub, who)
    if error is not None:
        with pytest.raises(error) as refused:
            await coordination.reassign(demo_hub, actor, view["id"], body)
        assert refused.value.code == code
    else:
        result = await coordination.reassign(demo_hub, actor, view["id"], body)
        assert result["claimed_by"] == after
        if body["to"]:
            assert result["route"][-1]["action"] == "reassign" and body["reason"] in result["route"][-1]["reason"]
            (event,) = await events_of(demo_hub, view["id"], "request.reassigned")
            assert (event["from"], event["to"], event["by"]) == (holder, after, who)
        else:
            (event,) = await events_of(demo_hub, view["id"], "request.claim_released")
            assert (event["reason"], event["note"], event["holder"]) == ("coordinator", body["reason"], holder)
    shown = await requests.get(demo_hub, await actor_for_username(demo_hub, "county_coord"), view["id"])
    assert shown["claimed_by"] == after


async def test_reassign_over_http(client: Any) -> None:
    from tests.integration.test_registry_api import problem_of
    from tests.integration.test_requests_api import act, queued_imaging

    view = await queued_imaging(client)
    await act(client, "county_reader", view["id"], "claim")
    coordinator = await client.login("county_coord")
    resp = await client.post(
        f"/api/v1/requests/{view['id']}/reassign", json={"to": "junior_reader", "reason": "会诊"}, headers=coordinator
    )
    assert resp.status == 200 and (await resp.json())["claimed_by"] == "junior_reader"
    await problem_of(
        await client.post(f"/api/v1/requests/{view['id']}/reassign", json={"to": "x"}, headers=coordinator),
        422,
        "schema-violation",
    )
