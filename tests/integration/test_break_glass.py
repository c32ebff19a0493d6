"""Administrators get aggregates: a patient's record only with a stated reason (break-glass), audited with the
reason and filed under the patient's institution."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from sqlalchemy import select

from telenet.store.models import AuditEntry
from tests.integration.test_requests_api import create

TOWNSHIP = "/NL-PROV/NL-C01/NL-C01-K01/NL-C01-K01-T01/"


async def test_an_admin_sees_a_record_only_with_a_stated_reason(client: Any) -> None:
    view = await create(client)
    admin = await client.login("county_admin")
    refused = await client.get(f"/api/v1/requests/{view['id']}", headers=admin)
    assert refused.status == 403
    assert (await refused.json())["type"] == "urn:telenet:problem:break-glass-required"
    assert "张三" not in await refused.text()

    reason = "质控抽查：患者投诉复核"
    glass = {**admin, "X-Break-Glass-Reason": quote(reason)}
    seen = await client.get(f"/api/v1/requests/{view['id']}", headers=glass)
    assert seen.status == 200 and (await seen.json())["patient"]["name"] == "张三"
    async with client.hub.sessions() as session:
        rows = (
            await session.execute(
                select(AuditEntry.outcome, AuditEntry.object_path, AuditEntry.detail)
                .where(AuditEntry.actor == "county_admin", AuditEntry.object_id == str(view["id"]))
                .order_by(AuditEntry.id)
            )
        ).all()
    assert [(r.outcome, r.object_path) for r in rows] == [("break-glass-required", TOWNSHIP), ("ok", TOWNSHIP)]
    assert rows[1].detail["break_glass"] == reason


async def test_an_admins_request_list_has_no_patient_names_without_a_reason(client: Any) -> None:
    await create(client)
    admin = await client.login("county_admin")
    listed = await (await client.get("/api/v1/requests", headers=admin)).json()
    assert [i["patient_name"] for i in listed["items"]] == [None]
    glass = {**admin, "X-Break-Glass-Reason": quote("医务科调阅")}
    listed = await (await client.get("/api/v1/requests", headers=glass)).json()
    assert [i["patient_name"] for i in listed["items"]] == ["张三"]


async def test_a_reason_is_stated_in_words(client: Any) -> None:
    view = await create(client)
    glass = {**await client.login("county_admin"), "X-Break-Glass-Reason": "x"}
    resp = await client.get(f"/api/v1/requests/{view['id']}", headers=glass)
    assert resp.status == 422 and (await resp.json())["type"] == "urn:telenet:problem:bad-break-glass"


async def test_coordinators_and_clinics_need_no_reason(client: Any) -> None:
    view = await create(client)
    for user in ("township_doc", "county_coord"):
        assert (await client.get(f"/api/v1/requests/{view['id']}", headers=await client.login(user))).status == 200
