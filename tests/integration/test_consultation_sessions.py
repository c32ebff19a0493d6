"""Consultations as sessions (issue 15), table-driven on each database: a time one side proposes and the other
agrees, the phases scheduled → in session → opinion (and cancellation) with time and person on the timeline,
illegal steps refused as 409 problem JSON that change nothing, participants only from invited centers, and a
removal that ends access at once: the request, its attachments, the live session and the event subscription."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from telenet.domain.errors import Conflict
from telenet.services import consultation
from telenet.services.auth import actor_for_username
from telenet.store.models import AuditEntry, Report
from tests.factories import order
from tests.integration.test_console_pages import page

pytestmark = pytest.mark.storage

WISHED = "2026-03-03T10:00:00+08:00"
COUNTER = "2026-03-03T15:00:00+08:00"
OPINION = {"findings": "会诊意见：考虑不稳定型心绞痛。", "impression": "建议转上级医院。", "final": True}
DICOM = b"\x00" * 128 + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00" + b"\x00" * 8


async def call(client: Any, user: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    resp = await client.request(method, path, json=body, headers=await client.login(user))
    data = await resp.json() if resp.content_type.endswith("json") else await resp.read()
    return resp.status, data


async def ordered(client: Any, **extra: Any) -> int:
    body = order("consultation", modality=None, subspecialty="cardiology", priority="urgent", **extra)
    status, view = await call(client, "township_doc", "POST", "/api/v1/requests", body)
    assert status == 201, view
    assert view["center"]["code"] == "NL-C01-CONS"
    return int(view["id"])


async def step(client: Any, user: str, rid: int, what: str, body: Any = None) -> tuple[int, Any]:
    paths = {
        "propose": ("POST", "/time"),
        "agree": ("POST", "/time/agree"),
        "start": ("POST", "/start"),
        "view": ("GET", ""),
    }
    method, suffix = paths[what]
    return await call(client, user, method, f"/api/v1/consultations/{rid}{suffix}", body)


async def test_the_other_side_agrees_a_proposed_time(client: Any) -> None:
    rid = await ordered(client, scheduled_at=WISHED)
    status, view = await step(client, "township_doc", rid, "view")
    assert status == 200 and view["phase"] == "proposed" and view["mode"] == "live"
    assert (view["proposed"]["by"], view["proposed"]["side"]) == ("township_doc", "requesting")
    # (who, step, body, status, phase after, problem code): the proposer never agrees its own proposal.
    table = [
        ("township_doc", "agree", None, 409, "proposed", "own-proposal"),
        ("city_reader", "propose", {"time": COUNTER, "note": "上午门诊"}, 200, "proposed", None),
        ("city_reader", "agree", None, 409, "proposed", "own-proposal"),
        ("township_doc3", "agree", None, 403, "proposed", "scope"),
        ("township_doc", "agree", None, 200, "scheduled", None),
        ("city_coord", "agree", None, 409, "scheduled", "illegal-transition"),
    ]
    for user, what, body, expected, phase, code in table:
        status, answer = await step(client, user, rid, what, body)
        assert status == expected, (user, what, answer)
        if code:
            assert answer["type"].endswith(code) and answer["status"] == expected, answer
        assert (await step(client, "township_doc", rid, "view"))[1]["phase"] == phase, (user, what)
    view = (await step(client, "city_reader", rid, "view"))[1]
    assert view["agreed"]["time"] == "2026-03-03T07:00:00+00:00" and view["agreed"]["by"] == "township_doc"
    assert [(s["action"], s["by"], s["phase"]) for s in view["timeline"]] == [
        ("propose", "township_doc", "proposed"),
        ("propose", "city_reader", "proposed"),
        ("agree", "township_doc", "scheduled"),
    ]
    assert view["timeline"][1]["note"] == "上午门诊" and all(s["at"] for s in view["timeline"])

    # The console's request page carries the session: phase, agreed time (Asia/Shanghai), controls, timeline.
    status, html = await page(client, "city_reader", f"/requests/{rid}")
    assert status == 200
    for text in ("已预约", "2026-03-03 15:00", "确认会诊时间", "邀请专家", "邀请中心", "提议时间"):
        assert text in html, text
    assert f'data-api="/api/v1/consultations/{rid}/start"' not in html, "only the holder or a coordinator starts"


async def test_phases_in_order_and_illegal_steps_refused(client: Any) -> None:
    rid = await ordered(client, scheduled_at=WISHED)
    # (who, action, status, problem code): each refusal changes nothing.
    table: list[tuple[str, str, int, str | None]] = [
        ("city_reader", "start", 403, "forbidden"),  # not holding it, not a coordinator
        ("city_coord", "start", 409, "illegal-transition"),  # proposed, not scheduled
        ("city_reader", "agree", 200, None),
        ("city_coord", "start", 409, "not-accepted"),  # scheduled, but nobody accepted (claimed) it
        ("city_reader", "claim", 200, None),
        ("city_reader", "opinion", 409, "illegal-transition"),  # the session has not started
        ("city_reader", "start", 200, None),
        ("city_reader", "start", 409, "illegal-transition"),
        ("city_reader", "propose", 409, "illegal-transition"),
        ("city_reader", "opinion", 200, None),
        ("township_doc", "propose", 409, "illegal-transition"),
    ]
    for user, action, expected, code in table:
        if action == "claim":
            status, answer = await call(client, user, "POST", f"/api/v1/requests/{rid}/claim")
        elif action == "opinion":
            status, answer = await call(client, user, "POST", f"/api/v1/requests/{rid}/report", OPINION)
        else:
            body = {"time": COUNTER} if action == "propose" else None
            status, answer = await step(client, user, rid, action, body)
        assert status == expected, (user, action, answer)
        if code:
            assert answer["type"].endswith(code), answer
    async with client.hub.sessions() as session:
        reports = (await session.execute(select(func.count()).where(Report.request_id == rid))).scalar_one()
    assert reports == 1, "the refused opinion stored nothing"
    view = (await step(client, "township_doc", rid, "view"))[1]
    assert view["phase"] == "opinion" and view["state"] == "final"
    assert view["started"]["by"] == "city_reader" and view["opinion"]["by"] == "city_reader"
    assert [s["action"] for s in view["timeline"]] == ["propose", "agree", "start", "opinion"]


async def test_written_consultations_and_cancellation(client: Any) -> None:
    # (wished time, what happens, phase after, last timeline step and its person)
    table = [
        (None, "opinion", "opinion", ("opinion", "city_reader")),  # 非实时会诊: the opinion needs no session
        (WISHED, "cancel", "cancelled", ("cancel", "township_doc")),
        (None, "cancel", "cancelled", ("cancel", "township_doc")),
    ]
    for wished, what, phase, last in table:
        rid = await ordered(client, **({"scheduled_at": wished} if wished else {}))
        if what == "cancel":
            status, answer = await call(
                client, "township_doc", "POST", f"/api/v1/requests/{rid}/cancel", {"note": "转院"}
            )
        else:
            assert (await call(client, "city_reader", "POST", f"/api/v1/requests/{rid}/claim"))[0] == 200
            status, answer = await call(client, "city_reader", "POST", f"/api/v1/requests/{rid}/report", OPINION)
        assert status == 200, answer
        view = (await step(client, "township_doc", rid, "view"))[1]
        assert view["phase"] == phase, (wished, what)
        assert (view["timeline"][-1]["action"], view["timeline"][-1]["by"]) == last
        assert (await step(client, "township_doc", rid, "propose", {"time": COUNTER}))[0] == 409


async def test_two_consultants_agreeing_at_once_one_wins(client: Any) -> None:
    """The database decides: the request row is locked (PostgreSQL) and the session's UPDATE is conditional on
    its version, so of two agreements sent together exactly one is recorded; the other is a 409."""
    rid = await ordered(client, scheduled_at=WISHED)
    hub = client.hub
    reader = await actor_for_username(hub, "city_reader")
    coordinator = await actor_for_username(hub, "city_coord")
    outcomes = await asyncio.gather(
        consultation.agree_time(hub, reader, rid),
        consultation.agree_time(hub, coordinator, rid),
        return_exceptions=True,
    )
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert len(refused) == 1 and isinstance(refused[0], Conflict), outcomes
    view = (await step(client, "township_doc", rid, "view"))[1]
    assert view["phase"] == "scheduled" and [s["action"] for s in view["timeline"]] == ["propose", "agree"]


async def test_a_participant_belongs_to_an_invited_center(client: Any) -> None:
    # (username, centers invited first, status, problem code)
    table: list[tuple[str, list[str], int, str | None]] = [
        ("city_coord", [], 200, None),  # the consultant center's own staff
        ("province_reader", [], 422, "participant-center-not-invited"),
        ("province_reader", ["NL-PROV-CONS"], 200, None),  # MDT: a second center invited
        ("county_reader", ["NL-PROV-CONS"], 422, "participant-center-not-invited"),
        ("township_doc2", ["NL-PROV-CONS"], 422, "participant-not-specialist"),
        ("no_such_user", [], 422, "unknown-participant"),
    ]
    for username, invited, status, code in table:
        rid = await ordered(client)
        for center in invited:
            got, _ = await call(
                client, "township_doc", "POST", f"/api/v1/consultations/{rid}/centers", {"center": center}
            )
            assert got == 200
        got, answer = await call(
            client, "township_doc", "POST", f"/api/v1/consultations/{rid}/participants", {"username": username}
        )
        assert got == status, (username, answer)
        if code:
            assert answer["type"].endswith(code), answer
            continue
        active = [p for p in answer["participants"] if p["active"]]
        assert [(p["username"], p["added_by"]) for p in active] == [(username, "township_doc")]
        assert [c["code"] for c in answer["centers"]] == ["NL-C01-CONS", *invited]


async def test_removal_ends_access_at_once(client: Any) -> None:
    rid = await ordered(client, invited_centers=["NL-PROV-CONS"], participants=["province_reader"])
    guest = await client.login("province_reader")
    attach = {**guest, "Content-Type": "application/dicom", "X-Filename": "ecg.dcm"}
    added = await client.post(f"/api/v1/requests/{rid}/attachments", data=DICOM, headers=attach)
    assert added.status == 201, await added.text()
    href = (await added.json())["href"]
    for path in (f"/api/v1/requests/{rid}", href, f"/api/v1/consultations/{rid}"):
        assert (await client.get(path, headers=guest)).status == 200, path
    session_ws = await client.ws_connect(f"/api/v1/consultations/{rid}/ws", headers=guest)
    assert (await session_ws.receive_json(timeout=5))["type"] == "welcome"
    live = await client.ws_connect("/api/v1/ws", headers=guest)
    await live.send_json({"action": "subscribe", "topics": [f"request:{rid}"]})
    assert (await live.receive_json(timeout=5))["type"] == "subscribed"

    status, view = await call(
        client, "township_doc", "DELETE", f"/api/v1/consultations/{rid}/participants/province_reader?reason=不再需要"
    )
    assert status == 200, view
    gone = next(p for p in view["participants"] if p["username"] == "province_reader")
    assert (gone["active"], gone["removed_by"], gone["removal_reason"]) == (False, "township_doc", "不再需要")
    closed = await session_ws.receive(timeout=5)
    assert (closed.type, closed.data) == (aiohttp.WSMsgType.CLOSE, 4403), closed
    assert "participant-removed" in str(closed.extra)
    frames = [await live.receive(timeout=5) for _ in range(3)]
    texts = [f.json() for f in frames if f.type == aiohttp.WSMsgType.TEXT]
    errors = [t for t in texts if t["type"] == "error"]
    assert errors and errors[0]["code"] == "participant-removed" and "township_doc" in errors[0]["detail"], texts
    assert (frames[-1].type, frames[-1].data) == (aiohttp.WSMsgType.CLOSE, 4403), frames
    assert "participant-removed" in frames[-1].extra
    for path in (f"/api/v1/requests/{rid}", href, f"/api/v1/consultations/{rid}", f"/api/v1/requests/{rid}/messages"):
        assert (await client.get(path, headers=guest)).status == 403, path
    again = await client.post(f"/api/v1/requests/{rid}/attachments", data=DICOM, headers=attach)
    assert again.status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(f"/api/v1/consultations/{rid}/ws", headers=guest)
    assert refused.value.status == 403
    async with client.hub.sessions() as session:
        reads = (
            (
                await session.execute(
                    select(AuditEntry.outcome).where(
                        AuditEntry.action == "attachment.read", AuditEntry.actor == "province_reader"
                    )
                )
            )
            .scalars()
            .all()
        )
    assert sorted(reads) == ["ok", "scope"], "every read of an attachment is audited, the refused one too"

    # Invited again: access comes back; ending the center's invitation removes its participants with it.
    status, _ = await call(
        client, "city_coord", "POST", f"/api/v1/consultations/{rid}/participants", {"username": "province_reader"}
    )
    assert status == 200 and (await client.get(href, headers=guest)).status == 200
    status, view = await call(client, "city_coord", "DELETE", f"/api/v1/consultations/{rid}/centers/NL-PROV-CONS")
    assert status == 200 and (await client.get(href, headers=guest)).status == 403
    assert [s["action"] for s in view["timeline"]] == [
        "ordered",
        "center_invited",
        "participant_added",
        "participant_removed",
        "participant_added",
        "center_removed",
        "participant_removed",
    ]
    await client.close()


async def test_dicom_attachments_checked_by_their_bytes(client: Any) -> None:
    rid = await ordered(client)
    table = [
        (DICOM, 201),
        (b"\x00" * 128 + b"NOPE", 422),
        (b"DICM" + b"\x00" * 200, 422),  # the magic is after the 128-byte preamble
    ]
    headers = {**(await client.login("city_reader")), "Content-Type": "application/dicom", "X-Filename": "a.dcm"}
    for data, status in table:
        resp = await client.post(f"/api/v1/requests/{rid}/attachments", data=data, headers=headers)
        assert resp.status == status, await resp.text()
