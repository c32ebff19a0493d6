"""Assessment figures on both engines: a hand-built scenario of twelve requests across the tiers, driven
through the services on a fixed clock, with every figure checked exactly; then filters, scope and CSV.

The scenario (minutes after the order; K01 = 安澜县人民医院, the county of the township NL-C01-K01-T01):

  R1  township  imaging DX routine   complete 10, claim 30, final 50             q→f 40  o→f 50  SLA met
  R2  township  imaging CT stat      complete 5, final 25, critical, ack +8       q→f 20  o→f 25  met
  R3  village   ECG routine          complete 2, final 14, critical, escalated, ack +20    12 / 14   met
  R4  village   ECG stat             complete 1, final 16 (due at 11), critical never acked 15 / 16  missed
  R5  county    imaging US urgent    own center, no fee                           q→f 27  o→f 30  met
  R6  township  imaging DX urgent    breach at 65, swept to the city, final 75     q→f 71  o→f 75  breached
  R7  township  imaging DX routine   returned for bad image quality
  R8  township  imaging DX routine   cancelled
  R9  township  consultation routine city center, final 100                      q→f 100 o→f 100 met
  R10 township  ECG urgent           escalated by the reader, final at the city     q→f 8   o→f 9   met
  R11 township  imaging DX routine   still waiting for its images
  R12 another county's township ECG — outside the K01 selection
"""

from __future__ import annotations

import csv
import io
from typing import Any

from sqlalchemy import select

from telenet.services import assessment, fees, queue, recognition, reports, requests, sweeper
from telenet.services.auth import actor_for_username
from telenet.store.models import FeeLine
from tests.factories import order
from tests.integration.test_recognition import same_person_at
from tests.integration.test_registry_api import problem_of

FINAL = {"findings": "所见如上。", "impression": "印象如上。", "final": True}
CRITICAL = {**FINAL, "critical": True, "critical_items": ["危急值"]}


class Scenario:
    def __init__(self, hub: Any, clock: Any) -> None:
        self.hub = hub
        self.clock = clock
        self.ids: dict[str, int] = {}

    async def actor(self, name: str) -> Any:
        return await actor_for_username(self.hub, name)

    def wait(self, minutes: float) -> None:
        self.clock.advance(minutes=minutes)

    async def order(self, key: str, user: str, body: dict[str, Any]) -> int:
        view = await requests.submit(self.hub, await self.actor(user), body)
        self.ids[key] = view["id"]
        return int(view["id"])

    async def complete(self, rid: int, after: float, integration: str = "his_t01") -> None:
        self.wait(after)
        await requests.data_complete(self.hub, await self.actor(integration), rid)

    async def claim(self, rid: int, after: float, reader: str = "county_reader") -> None:
        self.wait(after)
        await queue.claim(self.hub, await self.actor(reader), rid)

    async def final(self, rid: int, after: float, reader: str = "county_reader", body: Any = FINAL) -> dict[str, Any]:
        self.wait(after)
        view: dict[str, Any] = await reports.report(self.hub, await self.actor(reader), rid, body)
        return view

    async def ack(self, view: dict[str, Any], after: float, user: str) -> None:
        self.wait(after)
        critical_id = view["critical_findings"][0]["id"]
        await reports.acknowledge(
            self.hub, await self.actor(user), critical_id, {"read_back_by": "值班护士", "read_back": "危急值已复述"}
        )

    async def sweep(self, after: float) -> Any:
        self.wait(after)
        return await sweeper.sweep_once(self.hub)


async def build(hub: Any, clock: Any) -> Scenario:
    s = Scenario(hub, clock)
    r1 = await s.order("R1", "township_doc", order(patient_id="P1", serial=1))
    await s.complete(r1, 10)
    await s.claim(r1, 20)
    await s.final(r1, 20)

    r2 = await s.order("R2", "township_doc", order(modality="CT", priority="stat", patient_id="P1", serial=1))
    await s.complete(r2, 5)
    await s.claim(r2, 5)
    view = await s.final(r2, 15, body=CRITICAL)
    await s.ack(view, 8, "township_doc")

    r3 = await s.order("R3", "village_doc", order("ecg", modality="ECG", patient_id="V3", serial=3))
    await s.complete(r3, 2)
    await s.claim(r3, 3)
    view = await s.final(r3, 9, body=CRITICAL)
    assert (await s.sweep(16)).criticals_escalated == 1
    await s.ack(view, 4, "village_doc")

    r4 = await s.order("R4", "village_doc", order("ecg", modality="ECG", priority="stat", patient_id="V4", serial=4))
    await s.complete(r4, 1)
    await s.claim(r4, 4)
    await s.final(r4, 11, body=CRITICAL)
    assert (await s.sweep(16)).criticals_escalated == 1

    r5 = await s.order("R5", "his_k01", order(modality="US", priority="urgent", patient_id="K5", serial=5))
    await s.complete(r5, 3, integration="his_k01")
    await s.claim(r5, 7)
    await s.final(r5, 20)

    r6 = await s.order("R6", "township_doc", order(priority="urgent", patient_id="P6", serial=6))
    await s.complete(r6, 4)
    swept = await s.sweep(61)
    assert swept.breaches == 1 and swept.criticals_escalated == 1  # R4's finding, a second time
    await s.claim(r6, 5, reader="city_reader")
    await s.final(r6, 5, reader="city_reader")

    r7 = await s.order("R7", "township_doc", order(patient_id="P7", serial=7))
    await s.complete(r7, 2)
    await s.claim(r7, 3)
    s.wait(2)
    await queue.return_request(hub, await s.actor("county_reader"), r7, "bad_image_quality", "运动伪影")

    r8 = await s.order("R8", "township_doc", order(patient_id="P8", serial=8))
    s.wait(1)
    await requests.cancel(hub, await s.actor("township_doc"), r8, "患者转诊")

    r9 = await s.order("R9", "township_doc", order("consultation", modality=None, patient_id="P9", serial=9))
    await s.claim(r9, 90, reader="city_reader")
    await s.final(r9, 10, reader="city_reader")

    r10 = await s.order("R10", "township_doc", order("ecg", modality="ECG", priority="urgent", patient_id="P10"))
    await s.complete(r10, 1)
    await s.claim(r10, 2)
    s.wait(1)
    await queue.escalate(hub, await s.actor("county_reader"), r10, "心律失常需上级判读")
    await s.claim(r10, 2, reader="city_reader")
    await s.final(r10, 3, reader="city_reader")

    await s.order("R11", "township_doc", order(patient_id="P11", serial=11))
    await s.order("R12", "township_doc3", order("ecg", modality="ECG", patient_id="X12", serial=12))

    # Recognition at the village clinic of the township, for the person of R1 and R2; one refund.
    await same_person_at(hub, "NL-C01-K01-T01-V01", "V-1", serial=1)
    village = await s.actor("village_doc")
    await recognition.record_decision(
        hub, village, {"result_request_id": r1, "patient_id": "V-1", "decision": "recognized"}
    )
    await recognition.record_decision(
        hub,
        village,
        {
            "result_request_id": r2,
            "patient_id": "V-1",
            "decision": "not_recognized",
            "reason_code": "condition_changed",
        },
    )
    async with hub.sessions() as session:
        r1_line = (await session.execute(select(FeeLine.id).where(FeeLine.request_id == r1))).scalar_one()
    await fees.refund(hub, await s.actor("county_admin"), r1_line, "重复收费")
    return s


def duration(median: float, p90: float) -> dict[str, float]:
    return {"median": median, "p90": p90}


def priority(count: int, q: tuple[float, float], o: tuple[float, float], met: int) -> dict[str, Any]:
    return {
        "count": count,
        "queued_to_final_minutes": duration(*q),
        "ordered_to_final_minutes": duration(*o),
        "sla_met": met,
        "sla_compliance": met / count,
    }


async def test_every_figure_of_the_scenario(client: Any, clock: Any) -> None:
    hub = client.hub
    await build(hub, clock)
    admin = await actor_for_username(hub, "county_admin")
    figures = await assessment.compute(hub, admin, institution="NL-C01-K01")

    assert figures["selection"]["institution"] == "NL-C01-K01"
    assert (figures["selection"]["from"], figures["selection"]["to"]) == (
        "2026-03-01T00:00:00+08:00",
        "2026-04-01T00:00:00+08:00",
    ), "the default period: this month in Asia/Shanghai"
    assert figures["volumes"] == {
        "total": 11,
        "by_kind": {"imaging": 7, "ecg": 3, "consultation": 1},
        "by_priority": {"stat": 2, "urgent": 3, "routine": 6},
        "by_requesting_tier": {"county": 1, "township": 8, "village": 2},
        "by_state_now": {"ordered": 1, "final": 8, "returned": 1, "cancelled": 1},
    }
    turnaround = figures["turnaround"]
    assert turnaround["by_priority"] == {
        "stat": priority(2, (17.5, 19.5), (20.5, 24.1), 1),
        "urgent": priority(3, (27.0, 62.2), (30.0, 66.0), 2),
        "routine": priority(3, (40.0, 88.0), (50.0, 90.0), 3),
    }
    assert turnaround["overall"] == priority(8, (23.5, 79.7), (27.5, 82.5), 6)
    assert {"queued_to_final_minutes", "ordered_to_final_minutes", "sla_met", "percentile_method"} <= set(
        turnaround["definitions"]
    )
    assert "escalated" in turnaround["definitions"]["sla_met"]
    assert figures["returns"]["count"] == 1
    assert {k: v for k, v in figures["escalations"].items() if k != "definition"} == {
        "total": 2,
        "on_sla_breach": 1,
        "by_staff": 1,
        "failed": 0,
    }
    assert figures["sla_breaches"]["count"] == 1
    critical = {k: v for k, v in figures["critical_findings"].items() if k != "definitions"}
    assert critical == {
        "raised": 3,
        "acknowledged": 2,
        "unacknowledged": 1,
        "escalated": 2,
        "acknowledgement_minutes": duration(14.0, 18.8),
    }
    recognized = {k: v for k, v in figures["recognition"].items() if k != "definitions"}
    assert recognized == {
        "decisions": 2,
        "recognized": 1,
        "not_recognized": 1,
        "recognition_rate": 0.5,
        "fees_avoided_fen": 8000,
        "fees_avoided_yuan": "80.00",
        "not_recognized_by_reason": {"condition_changed": {"label": "病情变化", "count": 1}},
    }
    # R1 3000 (refunded), R2 CT stat 10400, R3 ECG 1500, R4 ECG stat 1950 at 70 % to the county;
    # R6 DX 3000, R9 consultation 20000, R10 ECG 1500 at 50 % to the city; R5 at its own center: no line.
    money = {k: v for k, v in figures["fees"].items() if k != "definitions"}
    assert money == {
        "charges": 7,
        "refunds": 1,
        "gross_fen": 41350 - 3000,
        "inviting_fen": 900 + 3120 + 450 + 585 + 1500 + 10000 + 750 - 900,
        "invited_fen": 2100 + 7280 + 1050 + 1365 + 1500 + 10000 + 750 - 2100,
        "gross_yuan": "383.50",
        "finals_without_fee": 1,
    }

    at_center = await assessment.compute(hub, admin, center="NL-C01-K01-IMG")
    assert at_center["volumes"]["total"] == 6 and at_center["turnaround"]["overall"]["count"] == 3
    assert at_center["recognition"]["decisions"] == 2, "decisions on results the center produced"
    in_network = await assessment.compute(hub, admin, network="NET-NL-C01-K01")
    assert in_network["volumes"]["total"] == 10, "the lead's own requests are not a member's"
    province = await assessment.compute(hub, await actor_for_username(hub, "province_admin"))
    assert province["volumes"]["total"] == 12 and province["selection"]["institution"] == "NL-PROV"

    resp = await client.get(
        "/api/v1/stats/assessment?institution=NL-C01-K01&from=2026-03-02&to=2026-03-03&format=csv",
        headers=await client.login("county_coord"),
    )
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/csv")
    raw = await resp.read()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = dict(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert rows["figure"] == "value" and rows["volumes.total"] == "11"
    assert rows["turnaround.by_priority.urgent.queued_to_final_minutes.p90"] == "62.2"
    assert rows["recognition.not_recognized_by_reason.condition_changed.label"] == "病情变化"
    assert rows["selection.from"] == "2026-03-02T00:00:00+08:00"
    as_json = await (
        await client.get("/api/v1/stats/assessment?from=2026-03-03", headers=await client.login("county_admin"))
    ).json()
    assert as_json["volumes"]["total"] == 0 and as_json["turnaround"]["overall"]["sla_compliance"] is None

    for user, query, status, code in [
        ("township_doc", "", 403, "role"),
        ("county_reader", "", 403, "role"),
        ("county_admin", "?network=NET-NL-C01", 403, "scope"),
        ("county_coord", "?institution=NL-C02", 403, "scope"),
        ("county_coord", "?center=NL-C01-IMG", 403, "scope"),
        ("county_admin", "?network=NOPE", 404, "not-found"),
        ("county_admin", "?from=soon", 422, "bad-parameter"),
        ("county_admin", "?from=2026-03-03&to=2026-03-02", 422, "bad-parameter"),
        ("county_admin", "?format=xml", 422, "bad-parameter"),
    ]:
        await problem_of(
            await client.get(f"/api/v1/stats/assessment{query}", headers=await client.login(user)), status, code
        )
    ok = await client.get("/api/v1/stats/assessment?center=NL-C01-K01-ECG", headers=await client.login("county_coord"))
    assert ok.status == 200
