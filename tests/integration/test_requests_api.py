"""Requests over REST on both engines: order, data complete, claim, report, sign, addenda, return, resubmit,
cancel, escalate — each with its 403/409/422 cases."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text

from telenet.domain.errors import Invalid
from tests.factories import national_id, order
from tests.integration.test_registry_api import problem_of


async def create(client: Any, user: str = "township_doc", body: dict[str, Any] | None = None) -> dict[str, Any]:
    resp = await client.post("/api/v1/requests", json=body or order(), headers=await client.login(user))
    assert resp.status == 201, await resp.text()
    view: dict[str, Any] = await resp.json()
    assert resp.headers["Location"] == f"/api/v1/requests/{view['id']}"
    return view


async def act(
    client: Any, user: str, request_id: int, action: str, body: dict[str, Any] | None = None, status: int = 200
) -> dict[str, Any]:
    resp = await client.post(
        f"/api/v1/requests/{request_id}/{action}", json=body or {}, headers=await client.login(user)
    )
    assert resp.status == status, await resp.text()
    result: dict[str, Any] = await resp.json()
    return result


async def queued_imaging(client: Any, **kwargs: Any) -> dict[str, Any]:
    view = await create(client, body=order(**kwargs))
    return await act(client, "his_t01", view["id"], "data-complete", {"signal": "api"})


FINAL = {"findings": "双肺纹理清晰，未见实变。", "impression": "胸部正位片未见明显异常。", "final": True}


async def test_order_is_routed_with_accession_and_route(client: Any) -> None:
    view = await create(client)
    assert view["state"] == "ordered" and view["center"]["code"] == "NL-C01-K01-IMG"
    assert view["accession_number"].startswith("TN260302") and len(view["accession_number"]) == 16
    assert view["route"][0]["action"] == "route" and "county" in view["route"][0]["reason"]
    assert view["patient"]["national_id_last4"] == "***" + national_id(1)[-1]
    assert view["patient"]["national_id_masked"] == "*" * 17 + national_id(1)[-1]
    assert national_id(1)[:17] not in json.dumps(view), "no part that the birth date and region complete"
    assert view["consent"]["given_by"] == "患者本人"
    assert view["due_at"] is None, "the SLA clock starts when the data is complete"


async def test_order_validation(client: Any) -> None:
    no_consent = order()
    del no_consent["consent"]
    body = await problem_of(
        await client.post("/api/v1/requests", json=no_consent, headers=await client.login("township_doc")),
        422,
        "consent-missing",
    )
    assert "知情同意" in body["detail"]
    bad = order()
    bad["patient"]["national_id"] = "450102198001010000"
    await problem_of(
        await client.post("/api/v1/requests", json=bad, headers=await client.login("township_doc")),
        422,
        "bad-national-id",
    )
    await problem_of(
        await client.post("/api/v1/requests", json={"kind": "x"}, headers=await client.login("township_doc")),
        422,
        "schema-violation",
    )
    await problem_of(
        await client.post("/api/v1/requests", json=order(), headers=await client.login("county_reader")), 403, "role"
    )
    await create(client, body=order(accession_number="ACC-1"))
    await problem_of(
        await client.post(
            "/api/v1/requests", json=order(accession_number="ACC-1"), headers=await client.login("township_doc")
        ),
        409,
        "duplicate-accession",
    )
    await problem_of(
        await client.post("/api/v1/requests", json=order(), headers=await client.login("township_doc2")),
        422,
        "no-route",
    )


async def test_national_id_is_in_no_table(client: Any) -> None:
    clear = national_id(7)
    await create(client, body=order(serial=7))
    async with client.hub.sessions() as session:
        dialect = session.bind.dialect.name
        if dialect == "sqlite":
            tables = [
                r[0] for r in (await session.execute(text("select name from sqlite_master where type='table'"))).all()
            ]
        else:
            tables = [
                r[0]
                for r in (
                    await session.execute(
                        text("select table_name from information_schema.tables where table_schema = current_schema()")
                    )
                ).all()
            ]
        assert "patients" in tables
        for table in tables:
            rows = (await session.execute(text(f'select * from "{table}"'))).all()
            dump = repr(rows)
            assert clear not in dump, f"national id in clear in {table}"
            assert clear[:17] not in dump


async def test_full_imaging_lifecycle(client: Any) -> None:
    view = await create(client)
    rid = view["id"]
    await problem_of(
        await client.post(f"/api/v1/requests/{rid}/claim", headers=await client.login("county_reader")),
        409,
        "illegal-transition",
    )
    await problem_of(
        await client.post(f"/api/v1/requests/{rid}/data-complete", json={}, headers=await client.login("township_doc")),
        403,
        "role",
    )
    queued = await act(client, "his_t01", rid, "data-complete")
    assert queued["state"] == "queued" and queued["data_completed_by"] == "api"
    assert queued["due_at"] == "2026-03-02T04:00:00+00:00", "routine X-ray (DX): 120 minutes from queued"

    claimed = await act(client, "county_reader", rid, "claim")
    assert claimed["state"] == "claimed" and claimed["claimed_by"] == "county_reader"
    await problem_of(
        await client.post(f"/api/v1/requests/{rid}/claim", headers=await client.login("junior_reader")),
        409,
        "already-claimed",
    )
    await problem_of(
        await client.post(f"/api/v1/requests/{rid}/claim", headers=await client.login("city_reader")), 403, "scope"
    )
    renewed = await act(client, "county_reader", rid, "claim")
    assert renewed["claim_expires_at"] == claimed["claim_expires_at"]  # the clock did not move

    draft = await act(client, "county_reader", rid, "report", {**FINAL, "final": False})
    assert draft["state"] == "claimed" and draft["reports"][0]["status"] == "preliminary"
    final = await act(client, "county_reader", rid, "report", FINAL)
    assert final["state"] == "final" and final["timestamps"]["final"]
    kept, report = final["reports"]
    assert kept["status"] == "preliminary" and kept["version"] == 1 and kept["superseded_at"]
    assert report["status"] == "final" and len(report["digest"]) == 64 and report["signed_at"]
    assert report["version"] == 2 and report["signer"] == report["preliminary_author"]
    body = await problem_of(
        await client.post(f"/api/v1/requests/{rid}/report", json=FINAL, headers=await client.login("county_reader")),
        409,
        "illegal-transition",
    )
    assert "final" in body["detail"]
    await problem_of(
        await client.post(f"/api/v1/requests/{rid}/cancel", json={}, headers=await client.login("township_doc")),
        409,
        "illegal-transition",
    )
    added = await act(client, "county_reader", rid, "addenda", {"text": "补充：左下肺野结节影需随访。"}, status=201)
    assert [r["status"] for r in added["reports"]] == ["preliminary", "final", "addendum"]
    assert added["reports"][1]["digest"] == report["digest"], "the final report never changes"

    seen = await (await client.get(f"/api/v1/requests/{rid}", headers=await client.login("township_doc"))).json()
    assert seen["state"] == "final"
    assert [r["status"] for r in seen["reports"]] == ["final", "addendum"], "the clinic never sees the draft"
    await problem_of(
        await client.get(f"/api/v1/requests/{rid}", headers=await client.login("township_doc3")), 403, "scope"
    )
    await problem_of(
        await client.get("/api/v1/requests/999999", headers=await client.login("township_doc")), 404, "not-found"
    )


async def test_junior_reader_may_save_but_not_sign(client: Any) -> None:
    view = await queued_imaging(client)
    await act(client, "junior_reader", view["id"], "claim")
    await act(client, "junior_reader", view["id"], "report", {**FINAL, "final": False})
    body = await problem_of(
        await client.post(
            f"/api/v1/requests/{view['id']}/report", json=FINAL, headers=await client.login("junior_reader")
        ),
        403,
        "practice-years",
    )
    assert "3 years" in body["detail"]
    again = await (
        await client.get(f"/api/v1/requests/{view['id']}", headers=await client.login("junior_reader"))
    ).json()
    assert again["state"] == "claimed", "a refused signature changes nothing"


async def test_return_and_resubmit(client: Any) -> None:
    view = await queued_imaging(client)
    rid = view["id"]
    await problem_of(
        await client.post(
            f"/api/v1/requests/{rid}/return", json={"reason": "blurry"}, headers=await client.login("county_reader")
        ),
        422,
        "schema-violation",
    )
    await act(client, "county_reader", rid, "claim")
    returned = await act(
        client, "county_reader", rid, "return", {"reason": "bad_image_quality", "note": "运动伪影，请重新摄片"}
    )
    assert returned["state"] == "returned" and returned["return"]["reason"] == "bad_image_quality"
    await problem_of(
        await client.post(f"/api/v1/requests/{rid}/resubmit", json={}, headers=await client.login("county_reader")),
        403,
        "scope",
    )
    again = await act(client, "township_doc", rid, "resubmit", {"note": "已重新摄片"})
    assert again["state"] == "queued"


async def test_cancel_rules(client: Any) -> None:
    view = await create(client)
    await problem_of(
        await client.post(f"/api/v1/requests/{view['id']}/cancel", json={}, headers=await client.login("village_doc")),
        403,
        "scope",
    )
    cancelled = await act(client, "township_doc", view["id"], "cancel", {"reason": "患者转诊"})
    assert cancelled["state"] == "cancelled"
    await problem_of(
        await client.post(
            f"/api/v1/requests/{view['id']}/data-complete", json={}, headers=await client.login("his_t01")
        ),
        409,
        "illegal-transition",
    )


async def test_manual_escalation_goes_up_a_tier(client: Any) -> None:
    view = await queued_imaging(client)
    rid = view["id"]
    await act(client, "county_reader", rid, "claim")
    up = await act(client, "county_reader", rid, "escalate", {"reason": "疑难病例，请上级会诊"})
    assert up["state"] == "queued" and up["center"]["code"] == "NL-C01-IMG" and up["claimed_by"] is None
    assert up["route"][-1]["action"] == "escalate" and up["escalations"] == 1
    await problem_of(
        await client.post(
            f"/api/v1/requests/{rid}/escalate", json={"reason": "x"}, headers=await client.login("county_reader")
        ),
        403,
        "scope",
    )
    top = await act(client, "city_reader", rid, "escalate", {"reason": "需省级专家"})
    assert top["center"]["code"] == "NL-PROV-IMG"
    body = await problem_of(
        await client.post(
            f"/api/v1/requests/{rid}/escalate", json={"reason": "x"}, headers=await client.login("province_reader")
        ),
        409,
        "no-higher-center",
    )
    assert "coordinators" in body["detail"]
    after = await (await client.get(f"/api/v1/requests/{rid}", headers=await client.login("province_reader"))).json()
    assert after["route"][-1]["action"] == "alert", "the failed escalation is recorded with its reason"


async def test_worklist_order_and_scope(client: Any) -> None:
    routine = await queued_imaging(client, patient_id="R1")
    stat = await queued_imaging(client, patient_id="S1", priority="stat")
    await create(client, body=order(patient_id="O1"))  # still ordered: not on the worklist
    resp = await client.get("/api/v1/centers/NL-C01-K01-IMG/worklist", headers=await client.login("county_reader"))
    items = (await resp.json())["items"]
    assert [i["request_id"] for i in items] == [stat["id"], routine["id"]]
    assert items[0]["sla_remaining_minutes"] == 30 and items[0]["patient_name"] == "张三"
    page = await (
        await client.get(
            "/api/v1/centers/NL-C01-K01-IMG/worklist?limit=1&offset=1", headers=await client.login("county_coord")
        )
    ).json()
    assert [i["request_id"] for i in page["items"]] == [routine["id"]]
    await problem_of(
        await client.get("/api/v1/centers/NL-C01-K01-IMG/worklist", headers=await client.login("city_reader")),
        403,
        "scope",
    )
    await problem_of(
        await client.get("/api/v1/centers/NL-C01-K01-IMG/worklist", headers=await client.login("township_doc")),
        403,
        "role",
    )
    await problem_of(
        await client.get("/api/v1/centers/NOPE/worklist", headers=await client.login("county_reader")), 404, "not-found"
    )


async def test_request_lists_are_scoped(client: Any) -> None:
    mine = await create(client)
    await create(client, user="township_doc3", body=order("ecg", modality="ECG"))
    listed = await (await client.get("/api/v1/requests", headers=await client.login("township_doc"))).json()
    assert [i["request_id"] for i in listed["items"]] == [mine["id"]]
    admin = await (await client.get("/api/v1/requests?kind=imaging", headers=await client.login("county_admin"))).json()
    assert [i["request_id"] for i in admin["items"]] == [mine["id"]]
    province = await (await client.get("/api/v1/requests", headers=await client.login("province_admin"))).json()
    assert len(province["items"]) == 2
    await problem_of(
        await client.get("/api/v1/requests?state=lost", headers=await client.login("township_doc")),
        422,
        "bad-parameter",
    )


async def test_order_without_consent_waits_in_ordered_until_consent_is_recorded(client: Any) -> None:
    from telenet.services import requests as request_service
    from telenet.services.auth import actor_for_username

    body = order()
    del body["consent"]
    his = await actor_for_username(client.hub, "his_t01")
    view = await request_service.submit(client.hub, his, body, consent_optional=True)
    assert view["state"] == "ordered" and view["consent"]["missing"] is True
    completed = await act(client, "his_t01", view["id"], "data-complete", {"signal": "api"})
    assert completed["state"] == "ordered" and completed["data_completed_at"], "data in, still waiting for consent"
    await problem_of(
        await client.post(
            f"/api/v1/requests/{view['id']}/consent",
            json={"given_by": "患者家属"},
            headers=await client.login("township_doc"),
        ),
        422,
        "schema-violation",
    )
    consented = await act(
        client,
        "township_doc",
        view["id"],
        "consent",
        {"given_by": "患者家属王五", "given_at": "2026-03-02T10:05:00+08:00"},
    )
    assert consented["state"] == "queued" and consented["consent"]["given_by"] == "患者家属王五"
    await problem_of(
        await client.post(
            f"/api/v1/requests/{view['id']}/consent",
            json={"given_by": "x", "given_at": "2026-03-02T10:05:00+08:00"},
            headers=await client.login("township_doc"),
        ),
        409,
        "consent-recorded",
    )
    consultation = order("consultation", modality=None)
    del consultation["consent"]
    with pytest.raises(Invalid, match="consent"):
        await request_service.submit(client.hub, his, consultation, consent_optional=True)


async def test_release_rules(client: Any) -> None:
    view = await queued_imaging(client)
    rid = view["id"]
    await problem_of(
        await client.post(f"/api/v1/requests/{rid}/release", headers=await client.login("county_reader")),
        409,
        "illegal-transition",
    )
    await act(client, "county_reader", rid, "claim")
    await problem_of(
        await client.post(f"/api/v1/requests/{rid}/release", headers=await client.login("junior_reader")),
        403,
        "not-holder",
    )
    released = await act(client, "county_coord", rid, "release")
    assert released["state"] == "queued" and released["claimed_by"] is None
    await act(client, "junior_reader", rid, "claim")
    mine = await act(client, "junior_reader", rid, "release")
    assert mine["state"] == "queued"


async def test_report_and_addendum_permissions_and_bodies(client: Any) -> None:
    view = await queued_imaging(client)
    rid = view["id"]
    reader = await client.login("county_reader")
    await problem_of(
        await client.post(f"/api/v1/requests/{rid}/report", json=FINAL, headers=reader), 409, "illegal-transition"
    )
    await act(client, "county_reader", rid, "claim")
    for bad in ({"findings": "x", "final": True}, {**FINAL, "final": "yes"}, {**FINAL, "extra": 1}):
        await problem_of(
            await client.post(f"/api/v1/requests/{rid}/report", json=bad, headers=reader), 422, "schema-violation"
        )
    await problem_of(
        await client.post(f"/api/v1/requests/{rid}/report", json={**FINAL, "critical": True}, headers=reader),
        422,
        "critical-items-missing",
    )
    await problem_of(
        await client.post(
            f"/api/v1/requests/{rid}/report", json={**FINAL, "structured": {"rate_bpm": 60}}, headers=reader
        ),
        422,
        "structured-not-allowed",
    )
    await problem_of(
        await client.post(f"/api/v1/requests/{rid}/report", json=FINAL, headers=await client.login("junior_reader")),
        403,
        "not-holder",
    )
    await act(client, "county_reader", rid, "report", FINAL)
    await problem_of(
        await client.post(
            f"/api/v1/requests/{rid}/addenda", json={"text": "补充"}, headers=await client.login("junior_reader")
        ),
        403,
        "practice-years",
    )
    await problem_of(
        await client.post(
            f"/api/v1/requests/{rid}/addenda", json={"text": "补充"}, headers=await client.login("city_reader")
        ),
        403,
        "scope",
    )
    await problem_of(
        await client.post(f"/api/v1/requests/{rid}/addenda", json={}, headers=reader), 422, "schema-violation"
    )
    open_request = await queued_imaging(client, patient_id="X2")
    await problem_of(
        await client.post(f"/api/v1/requests/{open_request['id']}/addenda", json={"text": "补充"}, headers=reader),
        409,
        "illegal-transition",
    )


async def test_critical_ack_bodies_and_scope(client: Any) -> None:
    view = await queued_imaging(client)
    await act(client, "county_reader", view["id"], "claim")
    final = await act(
        client, "county_reader", view["id"], "report", {**FINAL, "critical": True, "critical_items": ["张力性气胸"]}
    )
    cid = final["critical_findings"][0]["id"]
    clinic = await client.login("township_doc")
    await problem_of(await client.post(f"/api/v1/critical/{cid}/ack", json={}, headers=clinic), 422, "schema-violation")
    await problem_of(
        await client.post(
            f"/api/v1/critical/{cid}/ack",
            json={"read_back_by": "x", "read_back": "x"},
            headers=await client.login("township_doc3"),
        ),
        403,
        "scope",
    )
    await problem_of(
        await client.post("/api/v1/critical/99999/ack", json={"read_back_by": "x", "read_back": "x"}, headers=clinic),
        404,
        "not-found",
    )
    await problem_of(
        await client.post("/api/v1/critical/abc/ack", json={"read_back_by": "x", "read_back": "x"}, headers=clinic),
        422,
        "bad-parameter",
    )
    shown = await (await client.get(f"/api/v1/critical/{cid}", headers=clinic)).json()
    assert shown["items"] == ["张力性气胸"] and shown["timeline"][0]["event"] == "critical.raised"
