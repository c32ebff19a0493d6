"""Critical findings (危急值) when found, and reports that keep both doctors, on both engines: a junior reader
raises one from the claim at once, the HIS gets an ORU with status P and the items flagged, the reading
center records its phone call with the read-back, the clinic acknowledges only with a read-back, and the
escalation goes requesting institution → reading center's coordinator → further up; the senior signs a
final report naming the junior as 报告医师, checked against the practitioner registry an admin keeps."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import date
from typing import Any

import pytest
from sqlalchemy import select

from gateways.hl7.server import WorkerPool
from telenet.domain.errors import Conflict, Forbidden, Invalid, NotFound, TelenetError
from telenet.services import critical, practitioners, queue, reports, requests
from telenet.services.auth import actor_for_username, add_user
from telenet.services.sweeper import sweep_once
from telenet.store.models import HL7OutboxItem, PractitionerRecord, User
from tests.factories import order
from tests.integration.test_hl7_outbox import HIS, make_sender, point_township_at

FINAL = {"findings": "左侧胸腔可见无肺纹理透亮区。", "impression": "左侧张力性气胸。", "final": True}
ITEMS = ["张力性气胸"]


async def claimed_by(hub: Any, reader: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    clinic = await actor_for_username(hub, "township_doc")
    view = await requests.submit(hub, clinic, body or order(patient_id="CF1", serial=7))
    view = await requests.data_complete(hub, await actor_for_username(hub, "his_t01"), view["id"])
    await queue.claim(hub, await actor_for_username(hub, reader), view["id"])
    return view


async def outbox_rows(hub: Any) -> list[HL7OutboxItem]:
    async with hub.sessions() as session:
        return list((await session.execute(select(HL7OutboxItem).order_by(HL7OutboxItem.id))).scalars().all())


@pytest.fixture
async def his(demo_hub: Any) -> AsyncIterator[HIS]:
    peer = HIS()
    await point_township_at(demo_hub, await peer.start())
    yield peer
    await peer.stop()


@pytest.fixture
async def pool() -> AsyncIterator[WorkerPool]:
    workers = WorkerPool(1)
    await workers.start()
    yield workers
    await workers.stop()


async def test_junior_raises_at_once_his_gets_p_senior_signs_with_both_doctors(
    demo_hub: Any, his: HIS, pool: WorkerPool, settings: Any
) -> None:
    view = await claimed_by(demo_hub, "junior_reader")
    junior = await actor_for_username(demo_hub, "junior_reader")
    raised = await critical.raise_from_claim(demo_hub, junior, view["id"], {"items": ITEMS})
    assert raised["items"] == ITEMS and raised["source"] == "claim" and raised["raised_by"] == "赵晓雨"
    step = raised["timeline"][0]
    assert step["event"] == "critical.raised" and step["notified"][0] == "township_doc"

    pending = await outbox_rows(demo_hub)
    assert [(r.result_status, r.critical_id, r.report_id) for r in pending] == [("P", raised["id"], None)]
    sender = make_sender(demo_hub, settings, pool)
    assert await sender.run_once() == 1
    oru = his.received[0]
    assert str(oru.segment("OBR")[25]) == "P" and str(oru.segment("ORC")[5]) == "IP"
    observations = [(str(o[3][0][0]), str(o[5]), str(o[8]), str(o[11])) for o in oru.segments("OBX")]
    assert observations == [("CRITICAL", "张力性气胸", "AA", "P")], "only the flagged items, never a draft"
    assert str(oru.segment("OBR")[32]) == "junior_reader&赵晓雨"

    # the junior writes the preliminary, the senior takes over and signs: the finding is not raised twice
    await reports.report(
        demo_hub, junior, view["id"], {**FINAL, "final": False, "critical": True, "critical_items": ITEMS}
    )
    with pytest.raises(Forbidden) as refused:
        await reports.report(demo_hub, junior, view["id"], FINAL)
    assert refused.value.code == "practice-years"
    coordinator = await actor_for_username(demo_hub, "county_coord")
    await queue.release(demo_hub, coordinator, view["id"])
    senior = await actor_for_username(demo_hub, "county_reader")
    await queue.claim(demo_hub, senior, view["id"])
    final = await reports.report(demo_hub, senior, view["id"], {**FINAL, "critical": True, "critical_items": ITEMS})
    assert len(final["critical_findings"]) == 1
    signed = final["reports"][-1]
    assert (signed["status"], signed["preliminary_author"], signed["signer"]) == ("final", "赵晓雨", "陈立明")
    assert [r["status"] for r in final["reports"]] == ["preliminary", "final"]

    assert await sender.run_once() == 1
    oru = his.received[1]
    assert str(oru.segment("OBR")[25]) == "F"
    assert str(oru.segment("OBR")[32]) == "county_reader&陈立明"
    assert str(oru.segment("OBR")[33]) == "junior_reader&赵晓雨"
    assert str(oru.segment("ORC")[12]) == "township_doc^李青山" == str(oru.segment("OBR")[16])

    clinic = await actor_for_username(demo_hub, "township_doc")
    seen = await requests.get(demo_hub, clinic, view["id"])
    assert [r["status"] for r in seen["reports"]] == ["final"], "the clinic never sees the draft"
    assert seen["ordering_clinician"] == {"id": "township_doc", "name": "李青山"}


RAISERS = [
    # (who raises, holder, items, error class, code)
    ("junior_reader", "junior_reader", [" 张力性气胸 ", "张力性气胸"], None, None),
    ("county_reader", "junior_reader", ITEMS, Conflict, "not-holder"),
    ("county_coord", "junior_reader", ITEMS, Forbidden, "role"),
    ("township_doc", "junior_reader", ITEMS, Forbidden, "role"),
    ("city_reader", "junior_reader", ITEMS, Forbidden, "scope"),
    ("junior_reader", "junior_reader", ["  "], Invalid, "critical-items-missing"),
]


@pytest.mark.parametrize(("who", "holder", "items", "error", "code"), RAISERS)
async def test_who_may_raise_from_the_claim(
    demo_hub: Any, who: str, holder: str, items: list[str], error: type[TelenetError] | None, code: str | None
) -> None:
    view = await claimed_by(demo_hub, holder)
    actor = await actor_for_username(demo_hub, who)
    if error is None:
        raised = await critical.raise_from_claim(demo_hub, actor, view["id"], {"items": items})
        assert raised["items"] == ["张力性气胸"]
        with pytest.raises(Conflict) as again:
            await critical.raise_from_claim(demo_hub, actor, view["id"], {"items": items})
        assert again.value.code == "already-raised"
        return
    with pytest.raises(error) as refused:
        await critical.raise_from_claim(demo_hub, actor, view["id"], {"items": items})
    assert refused.value.code == code
    shown = await requests.get(demo_hub, await actor_for_username(demo_hub, "township_doc"), view["id"])
    assert shown["critical_findings"] == [], "a refused raise leaves nothing"


async def test_preliminary_with_critical_items_raises_at_once_and_hides_the_draft(demo_hub: Any) -> None:
    view = await claimed_by(demo_hub, "junior_reader")
    junior = await actor_for_username(demo_hub, "junior_reader")
    first = await reports.report(demo_hub, junior, view["id"], {**FINAL, "final": False})
    second = await reports.report(
        demo_hub, junior, view["id"], {**FINAL, "final": False, "critical": True, "critical_items": ITEMS}
    )
    assert [r["version"] for r in second["reports"]] == [1, 2], "preliminary versions are kept"
    assert second["reports"][0]["superseded_at"] and not second["reports"][1]["superseded_at"]
    assert first["critical_findings"] == [] and second["critical_findings"][0]["source"] == "preliminary"
    assert second["critical_findings"][0]["report_id"] == second["reports"][1]["id"]
    admin = dataclasses.replace(await actor_for_username(demo_hub, "county_admin"), break_glass="质控抽查")
    for who in (await actor_for_username(demo_hub, "township_doc"), admin):  # an admin only with a stated reason
        seen = await requests.get(demo_hub, who, view["id"])
        assert seen["reports"] == [] and seen["critical_findings"][0]["items"] == ITEMS


CALLS = [
    # (who records, body, error class, code)
    (
        "county_reader",
        {"callee": "李青山", "callee_role": "值班医生", "read_back": "张力性气胸", "confirmed": True},
        None,
        None,
    ),
    ("county_coord", {"callee": "李青山", "read_back": "张力性气胸", "confirmed": False}, None, None),
    ("city_reader", {"callee": "李青山", "read_back": "张力性气胸", "confirmed": True}, Forbidden, "scope"),
    ("township_doc", {"callee": "李青山", "read_back": "张力性气胸", "confirmed": True}, Forbidden, "role"),
    ("county_reader", {"callee": "李青山", "read_back": " ", "confirmed": True}, Invalid, "read-back-required"),
    (
        "county_reader",
        {"callee": "李青山", "read_back": "x", "confirmed": True, "called_at": "2026-03-01T00:00:00+00:00"},
        Invalid,
        "bad-called-at",
    ),
]


@pytest.mark.parametrize(("who", "body", "error", "code"), CALLS)
async def test_the_phone_step_is_recorded_with_its_read_back(
    demo_hub: Any, who: str, body: dict[str, Any], error: type[TelenetError] | None, code: str | None
) -> None:
    view = await claimed_by(demo_hub, "junior_reader")
    raised = await critical.raise_from_claim(
        demo_hub, await actor_for_username(demo_hub, "junior_reader"), view["id"], {"items": ITEMS}
    )
    demo_hub.clock.advance(minutes=2)
    actor = await actor_for_username(demo_hub, who)
    if error is not None:
        with pytest.raises(error) as refused:
            await critical.record_call(demo_hub, actor, raised["id"], body)
        assert refused.value.code == code
        return
    recorded = await critical.record_call(demo_hub, actor, raised["id"], body)
    assert recorded["calls"] == [
        {
            "called_at": (demo_hub.clock.now()).isoformat(),
            "caller": actor.display_name,
            "callee": "李青山",
            "callee_role": body.get("callee_role"),
            "phone": None,
            "read_back": "张力性气胸",
            "confirmed": body["confirmed"],
        }
    ]
    called = recorded["timeline"][-1]
    assert called["event"] == "critical.called" and called["caller"] == who and called["callee"] == "李青山"


ACKS = [
    # (who acknowledges, body, error class, code)
    ("township_doc", {"read_back_by": "值班护士李四", "read_back": "张力性气胸"}, None, None),
    ("township_doc", {"read_back_by": "值班护士李四"}, Invalid, "read-back-required"),
    ("township_doc", {"read_back_by": "值班护士李四", "read_back": "   "}, Invalid, "read-back-required"),
    ("junior_reader", {"read_back_by": "x", "read_back": "张力性气胸"}, Forbidden, "scope"),
    ("township_doc3", {"read_back_by": "x", "read_back": "张力性气胸"}, Forbidden, "scope"),
]


@pytest.mark.parametrize(("who", "body", "error", "code"), ACKS)
async def test_acknowledging_needs_the_read_back(
    demo_hub: Any, who: str, body: dict[str, Any], error: type[TelenetError] | None, code: str | None
) -> None:
    view = await claimed_by(demo_hub, "junior_reader")
    raised = await critical.raise_from_claim(
        demo_hub, await actor_for_username(demo_hub, "junior_reader"), view["id"], {"items": ITEMS}
    )
    actor = await actor_for_username(demo_hub, who)
    if error is not None:
        with pytest.raises(error) as refused:
            await critical.acknowledge(demo_hub, actor, raised["id"], body)
        assert refused.value.code == code
        shown = await critical.get(demo_hub, await actor_for_username(demo_hub, "township_doc"), raised["id"])
        assert shown["acknowledged_at"] is None
        return
    acked = await critical.acknowledge(demo_hub, actor, raised["id"], body)
    assert acked["read_back"] == "张力性气胸" and acked["timeline"][-1]["read_back"] == "张力性气胸"
    with pytest.raises(NotFound):
        await critical.acknowledge(demo_hub, actor, 999_999, body)


async def test_escalation_goes_requester_then_reading_center_then_up(demo_hub: Any) -> None:
    await add_user(demo_hub, username="township_admin", role="admin", institution="NL-C01-K01-T01", password=None)
    view = await claimed_by(demo_hub, "junior_reader")
    raised = await critical.raise_from_claim(
        demo_hub, await actor_for_username(demo_hub, "junior_reader"), view["id"], {"items": ITEMS}
    )
    expected = [
        (1, ["township_admin"]),
        (2, ["county_coord"]),
        (3, ["county_admin", "county_coord", "township_admin"]),
    ]
    for level, notified in expected:
        demo_hub.clock.advance(minutes=16)
        assert (await sweep_once(demo_hub)).criticals_escalated == 1
        shown = await critical.get(demo_hub, await actor_for_username(demo_hub, "township_doc"), raised["id"])
        step = shown["timeline"][-1]
        assert (step["event"], step["level"], step["notified"]) == ("critical.escalated", level, notified)
    assert (await sweep_once(demo_hub)).criticals_escalated == 0, "not again before the new deadline"


SIGNERS = [
    # (registry practice-since, account practice-since, code); the account's own field never counts
    (None, date(2000, 1, 1), "no-practitioner-record"),
    (date(2024, 8, 1), date(2000, 1, 1), "practice-years"),
    (date(2023, 3, 2), None, None),  # exactly three years on 2026-03-02
    (date(2023, 3, 3), None, "practice-years"),
]


@pytest.mark.parametrize(("registry", "declared", "code"), SIGNERS)
async def test_signing_follows_the_practitioner_registry(
    demo_hub: Any, registry: date | None, declared: date | None, code: str | None
) -> None:
    await add_user(
        demo_hub,
        username="new_reader",
        role="reader",
        institution="NL-C01-K01",
        password=None,
        centers=["NL-C01-K01-IMG"],
    )
    async with demo_hub.sessions() as session:
        user = (await session.execute(select(User).where(User.username == "new_reader"))).scalar_one()
        user.practice_since = declared
        await session.commit()
    admin = await actor_for_username(demo_hub, "county_admin")
    if registry is not None:
        record = await practitioners.put(
            demo_hub,
            admin,
            "new_reader",
            {"title": "主治医师", "practice_since": registry.isoformat(), "licence_number": "110450100000123"},
        )
        assert record["updated_by"] == "county_admin" and record["licence_number"] == "110450100000123"
    view = await claimed_by(demo_hub, "new_reader")
    reader = await actor_for_username(demo_hub, "new_reader")
    if code is None:
        final = await reports.report(demo_hub, reader, view["id"], FINAL)
        assert final["state"] == "final"
        return
    with pytest.raises(Forbidden) as refused:
        await reports.report(demo_hub, reader, view["id"], FINAL)
    assert refused.value.code == code


async def test_only_admins_of_the_subtree_keep_the_registry(demo_hub: Any) -> None:
    body = {"practice_since": "2010-01-01"}
    for who, error in (("county_reader", Forbidden), ("county_coord", Forbidden), ("township_doc", Forbidden)):
        with pytest.raises(error):
            await practitioners.put(demo_hub, await actor_for_username(demo_hub, who), "junior_reader", body)
    province_admin = await actor_for_username(demo_hub, "province_admin")
    shown = await practitioners.put(demo_hub, province_admin, "junior_reader", body)
    assert shown["practice_since"] == "2010-01-01"
    with pytest.raises(NotFound):
        await practitioners.put(demo_hub, province_admin, "nobody_here", body)
    with pytest.raises(Invalid):
        await practitioners.put(demo_hub, province_admin, "junior_reader", {"practice_since": "2010-13-01"})
    async with demo_hub.sessions() as session:
        row = await session.get(
            PractitionerRecord,
            (await session.execute(select(User.id).where(User.username == "junior_reader"))).scalar_one(),
        )
        assert row is not None and row.practice_since == date(2010, 1, 1) and row.updated_by == "province_admin"


async def test_the_endpoints_over_http(client: Any) -> None:
    from tests.integration.test_registry_api import problem_of
    from tests.integration.test_requests_api import act, queued_imaging

    view = await queued_imaging(client)
    rid = view["id"]
    junior = await client.login("junior_reader")
    await problem_of(
        await client.post(f"/api/v1/requests/{rid}/critical", json={"items": ITEMS}, headers=junior), 409, "not-holder"
    )
    await act(client, "junior_reader", rid, "claim")
    await problem_of(
        await client.post(f"/api/v1/requests/{rid}/critical", json={"items": []}, headers=junior),
        422,
        "schema-violation",
    )
    resp = await client.post(f"/api/v1/requests/{rid}/critical", json={"items": ITEMS}, headers=junior)
    assert resp.status == 201, await resp.text()
    raised = await resp.json()
    assert resp.headers["Location"] == f"/api/v1/critical/{raised['id']}"
    call = {"callee": "李青山", "read_back": "张力性气胸", "confirmed": True}
    resp = await client.post(
        f"/api/v1/critical/{raised['id']}/calls", json=call, headers=await client.login("county_reader")
    )
    assert resp.status == 201 and (await resp.json())["calls"][0]["confirmed"] is True
    clinic = await client.login("township_doc")
    await problem_of(
        await client.post(f"/api/v1/critical/{raised['id']}/calls", json=call, headers=clinic), 403, "role"
    )
    await problem_of(
        await client.post(f"/api/v1/critical/{raised['id']}/ack", json={"read_back_by": "李青山"}, headers=clinic),
        422,
        "schema-violation",
    )

    admin = await client.login("county_admin")
    resp = await client.put(
        "/api/v1/practitioners/junior_reader", json={"practice_since": "2019-09-01", "title": "主治医师"}, headers=admin
    )
    assert resp.status == 200 and (await resp.json())["practice_since"] == "2019-09-01"
    shown = await (await client.get("/api/v1/practitioners/junior_reader", headers=admin)).json()
    assert shown["title"] == "主治医师" and shown["updated_by"] == "county_admin"
    await problem_of(
        await client.put("/api/v1/practitioners/junior_reader", json={"practice_since": "2019-09-01"}, headers=junior),
        403,
        "role",
    )
    await problem_of(
        await client.put("/api/v1/practitioners/junior_reader", json={}, headers=admin), 422, "schema-violation"
    )
    # the registry now says eight years (the token's cached actor says one): the junior signs
    final = await act(client, "junior_reader", rid, "report", FINAL)
    assert final["state"] == "final" and final["reports"][-1]["signer"] == "赵晓雨"
