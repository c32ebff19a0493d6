"""``GET /metrics`` on both engines: public, Prometheus text, the queue / claim / final / breach figures per
center read from the database, and the registry hooks the gateways use (tallies and probes)."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from telenet.api.fee_routes import metrics_registry
from telenet.services import queue, reports, requests, sweeper
from telenet.services.auth import actor_for_username
from telenet.services.metrics import Family, Sample
from tests.factories import order

CRITICAL = {
    "findings": "ST段抬高",
    "impression": "急性心肌梗死可能",
    "final": True,
    "critical": True,
    "critical_items": ["STEMI"],
}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def at(center: str) -> tuple[tuple[str, str]]:
    return (("center", center),)


async def test_metrics(client: Any, clock: Any) -> None:
    hub = client.hub
    doc = await actor_for_username(hub, "township_doc")
    his = await actor_for_username(hub, "his_t01")
    reader = await actor_for_username(hub, "county_reader")

    async def queued(body: dict[str, Any]) -> int:
        rid: int = (await requests.submit(hub, doc, body))["id"]
        await requests.data_complete(hub, his, rid)
        return rid

    await queued(order(patient_id="A"))
    clock.advance(minutes=5)
    claimed = await queued(order(patient_id="B"))
    await queue.claim(hub, reader, claimed)
    ecg = await queued(order("ecg", modality="ECG", patient_id="C"))
    await queue.claim(hub, reader, ecg)
    await reports.report(hub, reader, ecg, CRITICAL)
    await queued(order("ecg", modality="ECG", priority="stat", patient_id="D"))
    clock.advance(minutes=15)
    assert (await sweeper.sweep_once(hub)).breaches == 1  # the stat ECG, moved up to the city

    registry = metrics_registry(client.server.app)
    assert metrics_registry(client.server.app) is registry
    received = registry.tally("telenet_dicom_instances_received_total", "Instances stored", ("calling_ae",))
    received.inc(calling_ae="C01K01T01")
    received.inc(2, calling_ae="C01K01T01")
    assert registry.tally("telenet_dicom_instances_received_total", "Instances stored", ("calling_ae",)) is received

    async def backlog(_hub: Any) -> list[Family]:
        return [Family("telenet_hl7_outbox_backlog", "gauge", "ORU messages waiting", (), (Sample((), 4.0),))]

    async def broken(_hub: Any) -> list[Family]:
        raise RuntimeError("a broken probe")

    registry.add_probe(broken)
    registry.add_probe(backlog)

    resp = await client.get("/metrics")  # public: no token
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    got = samples(text)
    assert got[("telenet_queue_depth", at("NL-C01-K01-IMG"))] == 1
    assert got[("telenet_queue_claimed", at("NL-C01-K01-IMG"))] == 1
    assert got[("telenet_queue_oldest_waiting_seconds", at("NL-C01-K01-IMG"))] == 20 * 60
    assert got[("telenet_queue_depth", at("NL-C01-ECG"))] == 1
    assert got[("telenet_queue_oldest_waiting_seconds", at("NL-C01-ECG"))] == 15 * 60, "since first queued"
    assert got[("telenet_queue_depth", at("NL-C01-K01-ECG"))] == 0
    assert got[("telenet_queue_oldest_waiting_seconds", at("NL-PROV-IMG"))] == 0
    assert got[("telenet_claims_total", at("NL-C01-K01-IMG"))] == 1
    assert got[("telenet_claims_total", at("NL-C01-K01-ECG"))] == 1
    assert got[("telenet_finals_total", at("NL-C01-K01-ECG"))] == 1
    assert got[("telenet_finals_total", at("NL-C01-K01-IMG"))] == 0
    assert got[("telenet_sla_breaches_total", at("NL-C01-K01-ECG"))] == 1
    assert got[("telenet_sla_breaches_total", at("NL-C01-ECG"))] == 0
    assert got[("telenet_open_requests", (("state", "queued"),))] == 2
    assert got[("telenet_open_requests", (("state", "claimed"),))] == 1
    assert got[("telenet_critical_unacknowledged", ())] == 1
    assert got[("telenet_dicom_instances_received_total", (("calling_ae", "C01K01T01"),))] == 3
    assert got[("telenet_hl7_outbox_backlog", ())] == 4
    assert "# TYPE telenet_claims_total counter" in text and "# TYPE telenet_queue_depth gauge" in text
    assert len([k for k in got if k[0] == "telenet_queue_depth"]) == 15, "every center has its series"
