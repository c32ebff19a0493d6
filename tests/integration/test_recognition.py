"""Result recognition (互认) on both engines: the eligibility table (window, network override, tier, same
institution, QC flag) read back through the service, and the REST endpoints: each reason code, the fee
avoided, refusals, scope and audit."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from telenet.domain.errors import Invalid
from telenet.domain.recognition import LABELS, RECOGNITION_SCOPE, NotRecognizedReason
from telenet.services import recognition, requests
from telenet.services.auth import actor_for_username
from telenet.services.network import load_network
from telenet.store.models import AuditEntry, Center, Institution, RecognitionDecision
from tests.factories import national_id, order
from tests.integration.test_fees import final_read
from tests.integration.test_registry_api import problem_of

ACCEPTING = {
    # institution: (tier relation to the producer NL-C01-K01, a county)
    "NL-C01-K01-T01": "the acquiring institution itself (the township made the data)",
    "NL-C01-K01-T02": "lower (township), 60-day override of NET-NL-C01-K01",
    "NL-C01-K02": "same tier (another county)",
    "NL-C01": "higher (city)",
    "NL-C01-K01": "the producer itself",
}


async def same_person_at(hub: Any, code: str, his_id: str, serial: int = 1) -> None:
    """Register the person (same national id) in another institution's HIS, as an ADT would."""
    async with hub.sessions() as session:
        inst = (await session.execute(select(Institution).where(Institution.code == code))).scalar_one()
        await requests.upsert_patient(
            hub, session, inst.id, {"id": his_id, "name": "张三", "national_id": national_id(serial)}
        )
        await session.commit()


async def verdicts(hub: Any, admin: Any) -> dict[str, tuple[bool, str]]:
    found = {}
    for code in ACCEPTING:
        result = await recognition.recognizable_results(hub, admin, f"H-{code}", code)
        [item] = result["items"]
        found[code] = (item["recognizable"], item["reason"])
    return found


async def test_eligibility_table(hub: Any, demo_doc: dict[str, Any], clock: Any) -> None:
    doc = copy.deepcopy(demo_doc)
    next(n for n in doc["networks"] if n["code"] == "NET-NL-C01-K01")["recognition_validity_days"] = {"imaging:DX": 60}
    await load_network(hub, doc)
    rid = await final_read(hub, body=order(patient_id="H-NL-C01-K01-T01"))
    for code in ACCEPTING:
        if code != "NL-C01-K01-T01":
            await same_person_at(hub, code, f"H-{code}")
    await same_person_at(hub, "NL-C01-K02", "OTHER", serial=2)  # another person: never matched
    admin = await actor_for_username(hub, "province_admin")
    final_at = clock.now()

    assert await verdicts(hub, admin) == {
        "NL-C01-K01-T01": (False, "same institution"),
        "NL-C01-K01-T02": (True, "recognizable"),
        "NL-C01-K02": (True, "recognizable"),  # a township under the county center's QC (同质化)
        "NL-C01": (False, "lower level"),
        "NL-C01-K01": (False, "same institution"),
    }
    result = await recognition.recognizable_results(hub, admin, "H-NL-C01-K02", "NL-C01-K02")
    [item] = result["items"]
    assert item["result_request_id"] == rid and item["producer"]["code"] == "NL-C01-K01"
    assert item["expires_at"] == (final_at + timedelta(days=30)).isoformat() and item["fee_avoided_fen"] == 8000
    assert item["acquirer"]["code"] == "NL-C01-K01-T01", "both institutions on the result"
    assert result["scope"] == RECOGNITION_SCOPE and "not the physician's conclusion" in result["scope"]
    assert (await recognition.recognizable_results(hub, admin, "OTHER", "NL-C01-K02"))["items"] == []

    clock.set(final_at + timedelta(days=30))
    assert (await verdicts(hub, admin))["NL-C01-K02"] == (True, "recognizable"), "the window is inclusive"
    clock.set(final_at + timedelta(days=30, seconds=1))
    table = await verdicts(hub, admin)
    assert table["NL-C01-K02"] == (False, "expired") and table["NL-C01-K01-T02"] == (True, "recognizable")
    clock.set(final_at + timedelta(days=60, seconds=1))
    assert (await verdicts(hub, admin))["NL-C01-K01-T02"] == (False, "expired"), "the network override: 60 days"

    clock.set(final_at + timedelta(days=1))
    async with hub.sessions() as session:
        await session.execute(update(Center).where(Center.code == "NL-C01-K01-IMG").values(qc_failed=True))
        await session.commit()
    assert await verdicts(hub, admin) == {
        "NL-C01-K01-T01": (False, "same institution"),
        "NL-C01-K01-T02": (False, "quality control failed"),
        "NL-C01-K02": (False, "quality control failed"),
        "NL-C01": (False, "quality control failed"),
        "NL-C01-K01": (False, "same institution"),
    }

    ecg = await final_read(hub, body=order("ecg", modality="ECG", patient_id="H-NL-C01-K01-T01"))
    pending = await requests.submit(
        hub, await actor_for_username(hub, "township_doc"), order(patient_id="H-NL-C01-K01-T01", modality="CT")
    )
    items = (await recognition.recognizable_results(hub, admin, "H-NL-C01-K02", "NL-C01-K02"))["items"]
    assert [i["result_request_id"] for i in items] == [ecg, rid], (
        f"final results only, newest first, not {pending['id']}"
    )
    assert (items[0]["recognizable"], items[0]["fee_avoided_fen"]) == (True, 2500), "the ECG center passes QC"
    clock.advance(days=7, seconds=1)
    items = (await recognition.recognizable_results(hub, admin, "H-NL-C01-K02", "NL-C01-K02"))["items"]
    assert (items[0]["recognizable"], items[0]["reason"]) == (False, "expired"), "ECG results: 7 days by default"


async def test_recognition_api(client: Any, clock: Any) -> None:
    hub = client.hub
    rid = await final_read(hub, body=order(patient_id="P0001"))
    other = await final_read(hub, body=order(patient_id="P0002", name="李四", serial=2))
    await same_person_at(hub, "NL-C01-K01-T01-V01", "V-1")
    village = await client.login("village_doc")

    url = "/api/v1/patients/V-1/recognizable-results?at=NL-C01-K01-T01-V01"
    listed = await (await client.get(url, headers=village)).json()
    assert [(i["result_request_id"], i["recognizable"]) for i in listed["items"]] == [(rid, True)]
    assert listed["patient"] == {"id": "V-1", "institution": "NL-C01-K01-T01-V01", "name": "张三"}
    assert "诊断结论" in listed["scope_note"]
    await problem_of(await client.get(url, headers=await client.login("township_doc3")), 403, "scope")
    await problem_of(await client.get(url, headers=await client.login("township_doc")), 403, "scope")
    await problem_of(await client.get(url, headers=await client.login("county_reader")), 403, "role")
    await problem_of(
        await client.get("/api/v1/patients/V-1/recognizable-results", headers=village), 422, "bad-parameter"
    )
    await problem_of(
        await client.get("/api/v1/patients/NOPE/recognizable-results?at=NL-C01-K01-T01-V01", headers=village),
        404,
        "not-found",
    )
    admin_view = await client.get(url, headers=await client.login("county_admin"))
    assert admin_view.status == 200, "an admin above the institution may look"
    async with hub.sessions() as session:
        audited = (
            (
                await session.execute(
                    select(AuditEntry).where(AuditEntry.action == "recognition.results").order_by(AuditEntry.id)
                )
            )
            .scalars()
            .all()
        )
    assert [(a.actor, a.outcome) for a in audited][:2] == [("village_doc", "ok"), ("township_doc3", "scope")]

    async def post(body: dict[str, Any], user: str = "village_doc") -> Any:
        return await client.post("/api/v1/recognitions", json=body, headers=await client.login(user))

    base = {"result_request_id": rid, "patient_id": "V-1"}
    resp = await post({**base, "decision": "recognized", "note": "胸片可用"})
    assert resp.status == 201, await resp.text()
    accepted = await resp.json()
    assert (accepted["decision"], accepted["fee_avoided_fen"], accepted["reason_code"]) == ("recognized", 8000, None)
    assert accepted["eligibility"] == {"recognizable": True, "reason": "recognizable"}
    assert accepted["producer"]["code"] == "NL-C01-K01" and accepted["scope"] == RECOGNITION_SCOPE

    for reason in NotRecognizedReason:
        resp = await post({**base, "decision": "not_recognized", "reason_code": reason.value, "note": "需复查"})
        assert resp.status == 201, await resp.text()
        body = await resp.json()
        assert (body["reason_code"], body["reason_label"], body["fee_avoided_fen"]) == (
            reason.value,
            LABELS[reason],
            None,
        )

    body = await problem_of(
        await post({**base, "decision": "not_recognized", "reason_code": "physician_judgement"}), 422, "invalid"
    )
    assert "note" in body["detail"]
    await problem_of(await post({**base, "decision": "not_recognized"}), 422, "invalid")
    await problem_of(await post({**base, "decision": "recognized", "reason_code": "emergency"}), 422, "invalid")
    await problem_of(
        await post({**base, "decision": "not_recognized", "reason_code": "bored"}), 422, "schema-violation"
    )
    await problem_of(await post({**base, "decision": "maybe"}), 422, "schema-violation")
    await problem_of(await post({**base, "result_request_id": other, "decision": "recognized"}), 404, "not-found")
    await problem_of(await post({**base, "patient_id": "NOPE", "decision": "recognized"}), 404, "not-found")
    await problem_of(await post({**base, "decision": "recognized"}, user="county_reader"), 403, "role")
    await problem_of(await post({**base, "decision": "recognized"}, user="township_doc3"), 404, "not-found")

    clock.advance(days=31)  # past the bearer token's life too: the service is called directly
    village_actor = await actor_for_username(hub, "village_doc")
    with pytest.raises(Invalid) as refused:
        await recognition.record_decision(hub, village_actor, {**base, "decision": "recognized"})
    assert refused.value.code == "not-recognizable" and "expired" in refused.value.message
    late = await recognition.record_decision(
        hub, village_actor, {**base, "decision": "not_recognized", "reason_code": "expired"}
    )
    assert late["eligibility"]["reason"] == "expired"

    async with hub.sessions() as session:
        rows = (await session.execute(select(RecognitionDecision).order_by(RecognitionDecision.id))).scalars().all()
    assert len(rows) == 1 + len(NotRecognizedReason) + 1
    assert sum(r.fee_avoided_fen or 0 for r in rows) == 8000 and rows[0].clinician == "王秀兰"
