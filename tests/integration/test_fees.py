"""Fees on both engines: one ledger line per final report (split, remainder, price in force, escalation),
none for cancelled / returned / own-institution work or addenda, refunds as negative lines, scope, the
settlement statement in JSON and CSV, and a property test that statements add up to their lines."""

from __future__ import annotations

import copy
import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from telenet.domain.fees import refund_split, split_fee
from telenet.services import fees, queue, reports, requests, settlement
from telenet.services.auth import actor_for_username
from telenet.services.network import load_network
from telenet.store.models import FeeLine, Institution, Report, Request
from tests.factories import order
from tests.integration.test_registry_api import problem_of

FINAL = {"findings": "双肺纹理清晰，未见实变。", "impression": "胸部正位片未见明显异常。", "final": True}
T01 = "NL-C01-K01-T01"


async def final_read(
    hub: Any,
    *,
    body: dict[str, Any] | None = None,
    requester: str = "township_doc",
    integration: str = "his_t01",
    reader: str = "county_reader",
    clock: Any = None,
    minutes: tuple[int, int, int] = (0, 0, 0),
) -> int:
    """Order, complete, claim and sign a read through the services; ``minutes`` advance the clock before
    data complete, claim and the final report."""
    view = await requests.submit(hub, await actor_for_username(hub, requester), body or order())
    rid: int = view["id"]
    if clock is not None and minutes[0]:
        clock.advance(minutes=minutes[0])
    if view["state"] == "ordered":
        await requests.data_complete(hub, await actor_for_username(hub, integration), rid)
    if clock is not None and minutes[1]:
        clock.advance(minutes=minutes[1])
    signer = await actor_for_username(hub, reader)
    await queue.claim(hub, signer, rid)
    if clock is not None and minutes[2]:
        clock.advance(minutes=minutes[2])
    await reports.report(hub, signer, rid, FINAL)
    return rid


async def lines_of(hub: Any, request_id: int | None = None) -> list[FeeLine]:
    async with hub.sessions() as session:
        query = select(FeeLine).order_by(FeeLine.id)
        if request_id is not None:
            query = query.where(FeeLine.request_id == request_id)
        return list((await session.execute(query)).scalars().all())


async def codes(hub: Any, line: FeeLine) -> tuple[str, str]:
    async with hub.sessions() as session:
        a = await session.get(Institution, line.inviting_institution_id)
        b = await session.get(Institution, line.invited_institution_id)
        assert a is not None and b is not None
        return a.code, b.code


SPLIT_CASES = [
    # (inviting member of NET-NL-C01-K01, modality, priority, price_fen, invited_share_bp, inviting_fen, invited_fen)
    ("NL-C01-K01-T01", "DX", "routine", 1, 7000, 1, 0),  # 0.7 fen: the remainder goes to the inviting side
    ("NL-C01-K01-T01-V01", "CR", "routine", 1, 10000, 0, 1),
    ("NL-C01-K01-T01-V02", "CT", "routine", 1, 0, 1, 0),
    ("NL-C01-K01-T02", "US", "routine", 0, 7000, 0, 0),
    ("NL-C01-K01-T02-V01", "DX", "stat", 3333, 3333, 2223, 1110),  # 1110.8889 floored
    ("NL-C01-K01-T02-V02", "CR", "stat", 9999, 5001, 4999, 5000),  # 5000.4999 floored
    ("NL-C01-K01-T03", "CT", "stat", 10001, 9999, 2, 9999),  # 9999.9999 floored
]


def requester_of(member: str) -> str:
    return "req_" + member.lower()


def split_doc(doc: dict[str, Any]) -> dict[str, Any]:
    """The demo network with one price and one agreement share per case, a requester at each member, and
    the routine US price replaced from 2026-03-03 (to show the price in force on the local day)."""
    doc = copy.deepcopy(doc)
    for member, modality, priority, price, share_bp, _, _ in SPLIT_CASES:
        wanted = None if priority == "routine" else priority
        for entry in doc["fee_schedule"]:
            if (entry["service"], entry["modality"], entry["priority"]) == ("imaging", modality, wanted):
                entry["price_fen"] = price
        net = next(n for n in doc["networks"] if n["code"] == "NET-NL-C01-K01")
        next(a for a in net["agreements"] if a["member"] == member)["invited_share_bp"] = share_bp
        doc["users"].append(
            {"username": requester_of(member), "display_name": "测试医师", "role": "requester", "institution": member}
        )
    us = next(e for e in doc["fee_schedule"] if (e["service"], e["modality"], e["priority"]) == ("imaging", "US", None))
    us["effective_to"] = "2026-03-02"
    doc["fee_schedule"].append({**us, "effective_from": "2026-03-03", "effective_to": None, "price_fen": 6001})
    return doc


async def test_a_final_report_writes_exactly_one_line(demo_hub: Any) -> None:
    rid = await final_read(demo_hub)
    [line] = await lines_of(demo_hub)
    assert (line.request_id, line.refund_of, line.reason) == (rid, None, None)
    assert await codes(demo_hub, line) == (T01, "NL-C01-K01")
    assert (line.service, line.modality, line.priority) == ("imaging", "DX", "routine")
    assert (line.price_fen, line.inviting_fen, line.invited_fen) == (3000, 900, 2100), "70 % to the county"
    assert (line.network_code, line.invited_share_bp, line.actor) == ("NET-NL-C01-K01", 7000, "county_reader")
    async with demo_hub.sessions() as session:
        report = (await session.execute(select(Report).where(Report.request_id == rid))).scalar_one()
    assert line.report_id == report.id and line.at == report.signed_at

    reader = await actor_for_username(demo_hub, "county_reader")
    await reports.addendum(demo_hub, reader, rid, {"text": "补充：左下肺野小结节，建议随访。"})

    doc = await actor_for_username(demo_hub, "township_doc")
    cancelled = await requests.submit(demo_hub, doc, order(patient_id="C1"))
    await requests.cancel(demo_hub, doc, cancelled["id"], "患者转诊")
    returned = await requests.submit(demo_hub, doc, order(patient_id="R1"))
    await requests.data_complete(demo_hub, await actor_for_username(demo_hub, "his_t01"), returned["id"])
    await queue.claim(demo_hub, reader, returned["id"])
    await queue.return_request(demo_hub, reader, returned["id"], "bad_image_quality", "运动伪影")
    own = await final_read(demo_hub, requester="his_k01", integration="his_k01", body=order(patient_id="K1"))
    async with demo_hub.sessions() as session:
        own_request = await session.get(Request, own)
        assert own_request is not None and own_request.state == "final"
    assert [x.id for x in await lines_of(demo_hub)] == [line.id], (
        "no line for an addendum, cancelled or returned work, or a county's own center (no agreement with oneself)"
    )

    async with demo_hub.sessions() as session:
        stored = (await session.execute(select(FeeLine))).scalar_one()
        stored.price_fen = 1
        with pytest.raises(RuntimeError, match="append-only"):
            await session.flush()
    async with demo_hub.sessions() as session:
        stored = (await session.execute(select(FeeLine))).scalar_one()
        await session.delete(stored)
        with pytest.raises(RuntimeError, match="append-only"):
            await session.flush()
    assert [x.price_fen for x in await lines_of(demo_hub)] == [3000]


async def test_split_remainder_and_the_price_in_force(hub: Any, demo_doc: dict[str, Any], clock: Any) -> None:
    await load_network(hub, split_doc(demo_doc))
    for member, modality, priority, price, share_bp, inviting, invited in SPLIT_CASES:
        rid = await final_read(
            hub, requester=requester_of(member), integration="his_k01", body=order(modality=modality, priority=priority)
        )
        [line] = await lines_of(hub, rid)
        assert (line.price_fen, line.inviting_fen, line.invited_fen) == (price, inviting, invited), member
        assert (inviting, invited) == split_fee(price, share_bp) and line.invited_share_bp == share_bp

    before = await final_read(hub, body=order(modality="US", patient_id="A"))
    # 16:30 UTC on March 2 is 00:30 on March 3 in Asia/Shanghai: the new price is in force.
    clock.set(datetime(2026, 3, 2, 16, 0, tzinfo=UTC))
    after = await final_read(hub, body=order(modality="US", patient_id="B"), clock=clock, minutes=(0, 0, 30))
    assert [(x.price_fen, x.inviting_fen) for x in await lines_of(hub, before)] == [(0, 0)]
    assert [(x.price_fen, x.inviting_fen, x.invited_fen) for x in await lines_of(hub, after)] == [(6001, 1801, 4200)]


async def test_escalation_and_refunds(client: Any) -> None:
    hub = client.hub
    county_line_request = await final_read(hub, body=order(patient_id="A"))
    view = await requests.submit(
        hub, await actor_for_username(hub, "township_doc"), order(patient_id="B", priority="stat")
    )
    await requests.data_complete(hub, await actor_for_username(hub, "his_t01"), view["id"])
    county = await actor_for_username(hub, "county_reader")
    await queue.claim(hub, county, view["id"])
    await queue.escalate(hub, county, view["id"], "疑难")
    city = await actor_for_username(hub, "city_reader")
    await queue.claim(hub, city, view["id"])
    await reports.report(hub, city, view["id"], FINAL)
    county_line, city_line = await lines_of(hub)
    assert county_line.request_id == county_line_request
    assert await codes(hub, city_line) == (T01, "NL-C01"), "escalated work is charged to the center that signed"
    assert (city_line.network_code, city_line.invited_share_bp) == ("NET-NL-C01", 5000)
    assert (city_line.price_fen, city_line.inviting_fen, city_line.invited_fen) == (3900, 1950, 1950)

    url = f"/api/v1/fees/{county_line.id}/refund"
    body = {"reason": "重复收费，退费"}
    await problem_of(await client.post(url, json=body, headers=await client.login("township_doc")), 403, "role")
    await problem_of(
        await client.post(url, json={}, headers=await client.login("county_admin")), 422, "schema-violation"
    )
    await problem_of(
        await client.post("/api/v1/fees/999999/refund", json=body, headers=await client.login("county_admin")),
        404,
        "not-found",
    )
    await problem_of(
        await client.post(f"/api/v1/fees/{city_line.id}/refund", json=body, headers=await client.login("county_admin")),
        403,
        "scope",
    )
    resp = await client.post(url, json=body, headers=await client.login("county_admin"))
    assert resp.status == 201, await resp.text()
    refund = await resp.json()
    assert refund["kind"] == "refund" and refund["refund_of"] == county_line.id and refund["reason"] == body["reason"]
    assert (refund["price_fen"], refund["inviting_fen"], refund["invited_fen"]) == (-3000, -900, -2100)
    assert (refund["inviting_fen"], refund["invited_fen"]) == refund_split((900, 2100))
    assert refund["actor"] == "county_admin" and refund["report_id"] is None
    await problem_of(
        await client.post(url, json=body, headers=await client.login("province_admin")), 409, "already-refunded"
    )
    await problem_of(
        await client.post(
            f"/api/v1/fees/{refund['id']}/refund", json=body, headers=await client.login("province_admin")
        ),
        422,
        "refund-of-refund",
    )
    listed = await (
        await client.get(f"/api/v1/fees?institution={T01}", headers=await client.login("township_doc"))
    ).json()
    assert [i["id"] for i in listed["items"]] == [refund["id"], city_line.id, county_line.id]
    original = listed["items"][-1]
    assert original["refunded_by"] == refund["id"] and original["price_fen"] == 3000
    assert listed["totals"] == {"lines": 3, "gross_fen": 3900, "inviting_fen": 1950, "invited_fen": 1950}
    assert (await lines_of(hub))[0].price_fen == 3000, "the original line is untouched"


async def test_fee_listing_schedule_and_scope(client: Any) -> None:
    hub = client.hub
    await final_read(hub, body=order(patient_id="A"))
    ecg = await final_read(hub, body=order("ecg", modality="ECG", patient_id="E"))
    mine = await (await client.get("/api/v1/fees", headers=await client.login("township_doc"))).json()
    assert mine["institution"] == T01 and mine["totals"]["lines"] == 2 and mine["unit"] == "fen"
    only_ecg = await (await client.get("/api/v1/fees?service=ecg", headers=await client.login("township_doc"))).json()
    assert [i["request_id"] for i in only_ecg["items"]] == [ecg]
    assert only_ecg["items"][0]["inviting"]["name"] == "安澜县清溪镇卫生院"
    later = await (await client.get("/api/v1/fees?from=2026-03-03", headers=await client.login("township_doc"))).json()
    assert later["items"] == [] and later["totals"]["gross_fen"] == 0
    today = await (
        await client.get("/api/v1/fees?from=2026-03-02&to=2026-03-03", headers=await client.login("county_admin"))
    ).json()
    assert today["totals"]["lines"] == 2 and today["institution"] == "NL-C01-K01"
    await problem_of(
        await client.get(f"/api/v1/fees?institution={T01}", headers=await client.login("township_doc3")), 403, "scope"
    )
    await problem_of(
        await client.get("/api/v1/fees?institution=NL-C01-K01", headers=await client.login("township_doc")),
        403,
        "scope",
    )
    await problem_of(await client.get("/api/v1/fees", headers=await client.login("county_reader")), 403, "role")
    other = await (await client.get("/api/v1/fees", headers=await client.login("township_doc3"))).json()
    assert other["items"] == [], "another township's lines are not listed"
    await problem_of(
        await client.get("/api/v1/fees?from=yesterday", headers=await client.login("township_doc")),
        422,
        "bad-parameter",
    )
    await problem_of(await client.get("/api/v1/fees"), 401, "missing-token")

    body = await (await client.get("/api/v1/fee-schedule", headers=await client.login("township_doc"))).json()
    assert len(body["items"]) == 27 and all(i["in_force"] for i in body["items"]), "21 read fees, 6 exam prices"
    ct = next(i for i in body["items"] if (i["modality"], i["priority"]) == ("CT", "stat"))
    assert (ct["price_fen"], ct["price_yuan"]) == (10400, "104.00") and "illustrative" in ct["source"]
    assert "sub-specialty" in body["precedence"]
    before = await (
        await client.get("/api/v1/fee-schedule?on=2024-12-31", headers=await client.login("township_doc"))
    ).json()
    assert before["items"] == []


async def test_settlement_json_and_csv(client: Any) -> None:
    hub = client.hub
    await final_read(hub, body=order(patient_id="A"))
    await final_read(hub, body=order("ecg", modality="ECG", patient_id="E"))
    await final_read(hub, body=order(patient_id="B"))
    first = (await lines_of(hub))[0]
    await fees.refund(hub, await actor_for_username(hub, "province_admin"), first.id, "误收")
    statement = await (
        await client.get("/api/v1/settlements?period=2026-03", headers=await client.login("province_admin"))
    ).json()
    [row] = statement["rows"]
    assert row["inviting"] == {"code": T01, "name": "安澜县清溪镇卫生院"}
    assert row["invited"] == {"code": "NL-C01-K01", "name": "安澜县人民医院"}
    assert (row["charges"], row["refunds"], row["gross_fen"]) == (3, 1, 3000 + 1500 + 3000 - 3000)
    assert row["inviting_fen"] + row["invited_fen"] == row["gross_fen"]
    assert (row["inviting_fen"], row["invited_fen"]) == (900 + 450, 2100 + 1050)
    assert statement["totals"]["gross_fen"] == 4500 and statement["timezone"] == "Asia/Shanghai"

    resp = await client.get(
        "/api/v1/settlements?period=2026-03&format=csv", headers=await client.login("province_admin")
    )
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/csv")
    assert "settlement-2026-03.csv" in resp.headers["Content-Disposition"]
    raw = await resp.read()
    assert raw.startswith(b"\xef\xbb\xbf"), "UTF-8 byte-order mark for spreadsheets"
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    assert [r["inviting_name"] for r in rows] == ["安澜县清溪镇卫生院", ""]
    assert rows[0]["invited_name"] == "安澜县人民医院" and rows[-1]["inviting_code"] == settlement.TOTAL_LABEL
    for column in ("charges", "refunds", "gross_fen", "inviting_fen", "invited_fen"):
        assert int(rows[-1][column]) == sum(int(r[column]) for r in rows[:-1])
    assert rows[0]["gross_yuan"] == "45.00" and rows[0]["inviting_yuan"] == "13.50"

    empty = await (
        await client.get("/api/v1/settlements?period=2026-02", headers=await client.login("county_admin"))
    ).json()
    assert empty["rows"] == [] and empty["totals"]["gross_fen"] == 0
    await problem_of(
        await client.get("/api/v1/settlements?period=2026-13", headers=await client.login("county_admin")),
        422,
        "invalid",
    )
    await problem_of(
        await client.get("/api/v1/settlements", headers=await client.login("county_admin")), 422, "bad-parameter"
    )
    await problem_of(
        await client.get("/api/v1/settlements?period=2026-03", headers=await client.login("township_doc")), 403, "role"
    )
    await problem_of(
        await client.get(
            "/api/v1/settlements?period=2026-03&institution=NL-C02", headers=await client.login("county_admin")
        ),
        403,
        "scope",
    )


# --- property: statements read back from the database add up ------------------------------------------------

MONTH_START = datetime(2026, 2, 28, 16, 0, tzinfo=UTC)  # 2026-03-01 00:00 Asia/Shanghai
MONTH_END = datetime(2026, 3, 31, 16, 0, tzinfo=UTC)
PAIRS = [
    (T01, "NL-C01-K01"),
    (T01, "NL-C01"),
    ("NL-C01-K01-T01-V01", "NL-C01-K01"),
    ("NL-C02-K02-T01", "NL-C02"),
    ("NL-C01-K01", "NL-PROV"),
]
EDGES = [MONTH_START, MONTH_START - timedelta(microseconds=1), MONTH_END, MONTH_END - timedelta(microseconds=1)]
moments = st.one_of(
    st.sampled_from(EDGES),
    st.integers(min_value=-3 * 24 * 60, max_value=34 * 24 * 60).map(lambda m: MONTH_START + timedelta(minutes=m)),
)
charges = st.tuples(
    st.integers(min_value=0, max_value=len(PAIRS) - 1),
    st.integers(min_value=0, max_value=2_000_000),
    st.integers(min_value=0, max_value=10_000),
    moments,
    st.one_of(st.none(), st.integers(min_value=0, max_value=40 * 24 * 60)),
)


async def _store_ledger(hub: Any, ledger: list[tuple[int, int, int, datetime, int | None]]) -> list[dict[str, Any]]:
    """Write the ledger (charges and their refunds) straight into the tables; returns what was written."""
    written: list[dict[str, Any]] = []
    async with hub.sessions() as session:
        await session.execute(text("DELETE FROM fee_lines"))
        await session.execute(text("DELETE FROM reports WHERE findings = 'property-test'"))
        ids = dict((await session.execute(select(Institution.code, Institution.id))).all())
        paths = dict((await session.execute(select(Institution.code, Institution.path))).all())
        request = (await session.execute(select(Request).limit(1))).scalar_one()
        schedule_id = (await session.execute(text("SELECT min(id) FROM fee_schedule"))).scalar_one()
        for pair, price, bp, at, refund_after in ledger:
            inviting, invited = PAIRS[pair]
            report = Report(
                request_id=request.id,
                status="final",
                findings="property-test",
                impression="",
                critical=False,
                critical_items=[],
                author_id=1,
                author_name="x",
                author_institution_id=ids[invited],
                center_id=request.center_id,
                created_at=at,
            )
            session.add(report)
            await session.flush()
            inviting_fen, invited_fen = split_fee(price, bp)
            common = {
                "request_id": request.id,
                "inviting_institution_id": ids[inviting],
                "invited_institution_id": ids[invited],
                "inviting_path": paths[inviting],
                "invited_path": paths[invited],
                "center_id": request.center_id,
                "service": "imaging",
                "modality": "DX",
                "priority": "routine",
                "subspecialty": None,
                "fee_schedule_id": schedule_id,
                "agreement_id": 0,
                "network_code": "TEST",
                "invited_share_bp": bp,
                "actor": "property",
            }
            charge = FeeLine(
                **common,
                report_id=report.id,
                price_fen=price,
                inviting_fen=inviting_fen,
                invited_fen=invited_fen,
                at=at,
            )
            session.add(charge)
            await session.flush()
            written.append(
                {
                    "pair": (inviting, invited),
                    "price": price,
                    "split": (inviting_fen, invited_fen),
                    "at": at,
                    "refund": False,
                }
            )
            if refund_after is not None:
                back = refund_split((inviting_fen, invited_fen))
                refund_at = at + timedelta(minutes=refund_after)
                session.add(
                    FeeLine(
                        **common,
                        refund_of=charge.id,
                        reason="test",
                        price_fen=-price,
                        inviting_fen=back[0],
                        invited_fen=back[1],
                        at=refund_at,
                    )
                )
                written.append(
                    {"pair": (inviting, invited), "price": -price, "split": back, "at": refund_at, "refund": True}
                )
        await session.commit()
    return written


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ledger=st.lists(charges, max_size=12))
async def test_settlement_statements_add_up(demo_hub: Any, ledger: list[Any]) -> None:
    async with demo_hub.sessions() as session:
        has_request = (await session.execute(select(Request.id).limit(1))).scalar_one_or_none()
    if has_request is None:
        await requests.submit(demo_hub, await actor_for_username(demo_hub, "township_doc"), order())
    written = await _store_ledger(demo_hub, ledger)
    admin = await actor_for_username(demo_hub, "province_admin")
    statement = await settlement.settlement(demo_hub, admin, "2026-03")

    expected: dict[tuple[str, str], list[int]] = {}
    for line in written:
        if MONTH_START <= line["at"] < MONTH_END:
            acc = expected.setdefault(line["pair"], [0, 0, 0, 0, 0])
            acc[1 if line["refund"] else 0] += 1
            acc[2] += line["price"]
            acc[3] += line["split"][0]
            acc[4] += line["split"][1]
    got = {
        (r["inviting"]["code"], r["invited"]["code"]): [
            r["charges"],
            r["refunds"],
            r["gross_fen"],
            r["inviting_fen"],
            r["invited_fen"],
        ]
        for r in statement["rows"]
    }
    assert got == expected, "each pair's totals are the sums of its lines in the month"
    for r in statement["rows"]:
        assert r["inviting_fen"] + r["invited_fen"] == r["gross_fen"]
    totals = statement["totals"]
    assert totals["gross_fen"] == sum(v[2] for v in expected.values())
    assert totals["inviting_fen"] + totals["invited_fen"] == totals["gross_fen"]
    rows = list(csv.DictReader(io.StringIO(settlement.settlement_csv(statement).removeprefix("\ufeff"))))
    for column in ("charges", "refunds", "gross_fen", "inviting_fen", "invited_fen"):
        assert int(rows[-1][column]) == sum(int(r[column]) for r in rows[:-1])
