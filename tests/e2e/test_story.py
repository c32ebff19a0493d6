"""One story per service over every real interface, with Orthanc as the county PACS:

HL7 order from the township HIS → worklist query by the simulated modality → C-STORE + MPPS (or the ECG) →
queued at the county center (and the study forwarded to Orthanc) → a reader claims over REST, following the
live worklist → signed final report → ORU^R01 received by the township HIS → a fee line → a county hospital
(the neighbouring one: the reading center's own hospital needs no recognition of its own result) recognizes
the result for the same patient, matched by national id → the assessment figures count it.
A consultation goes the REST way and is counted too."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets

from bench.common import DEMO, PASSWORD, HubProcess, free_port
from gateways.hl7.ack import parse_ack
from gateways.hl7.er7 import format_ts, new_message, set_field
from gateways.hl7.mllp import frame, read_frame
from telenet.sim.his import Order, OrderSender, ResultListener
from telenet.sim.modality import perform_imaging, send_ecg
from telenet.sim.world import Township
from tests.conftest import require_tool
from tests.factories import national_id
from tests.interop.test_dicom_orthanc import PACS_AE, Orthanc

pytestmark = pytest.mark.interop

# The city consultation center keeps office hours; out of them the province answers (24/7).
CONSULTANTS = {"NL-C01-CONS": "city_reader", "NL-PROV-CONS": "province_reader"}


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = Orthanc(require_tool("Orthanc"), tmp_path_factory.mktemp("orthanc-e2e"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def hub(tmp_path: Path, orthanc: Orthanc) -> Any:
    doc = json.loads(DEMO.read_text(encoding="utf-8"))
    his_port = free_port()
    for inst in doc["institutions"]:
        if inst["code"] == "NL-C01-K01-T01":
            inst["hl7_destination"] = {"host": "127.0.0.1", "port": his_port}
    for center in doc["centers"]:
        if center["code"] == "NL-C01-K01-IMG":
            center["dicom_node"] = {"ae_title": PACS_AE, "host": "127.0.0.1", "port": orthanc.dicom_port}
    # The neighbouring county hospital, where the patient turns up later: a clinician and its HIS account.
    doc["users"] += [
        {"username": "county2_doc", "display_name": "邻县门诊医生", "role": "requester", "institution": "NL-C01-K02"},
        {"username": "his_k02", "display_name": "邻县HIS接口", "role": "integration", "institution": "NL-C01-K02"},
    ]
    network = tmp_path / "network.json"
    network.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    process = HubProcess(
        network=network,
        protocols=True,
        env_extra={"TELENET_STUDY_QUIET_SECONDS": "1", "TELENET_SWEEP_INTERVAL_SECONDS": "1"},
    )
    process.prepare()
    process.set_all_passwords()
    process.his_port = his_port
    process.start()
    yield process
    process.stop()


class Story:
    def __init__(self, hub: Any, http: aiohttp.ClientSession) -> None:
        self.hub = hub
        self.http = http
        self.tokens: dict[str, str] = {}
        self.results: list[tuple[str, str, str]] = []

    async def headers(self, user: str) -> dict[str, str]:
        if user not in self.tokens:
            async with self.http.post(
                f"{self.hub.url}/api/v1/auth/token", json={"username": user, "password": PASSWORD}
            ) as r:
                assert r.status == 200, await r.text()
                self.tokens[user] = (await r.json())["token"]
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    async def call(self, method: str, user: str, path: str, body: Any = None, status: int = 200) -> Any:
        async with self.http.request(method, f"{self.hub.url}{path}", json=body, headers=await self.headers(user)) as r:
            assert r.status == status, f"{method} {path}: {r.status} {await r.text()}"
            return await r.json(content_type=None)

    async def worklist_socket(self, center: str) -> Any:
        token = (await self.headers("county_reader" if "K01" in center else "city_reader"))["Authorization"][7:]
        ws = await websockets.connect(
            self.hub.url.replace("http", "ws") + "/api/v1/ws", additional_headers={"Authorization": f"Bearer {token}"}
        )
        await ws.send(json.dumps({"action": "subscribe", "topics": [f"worklist:{center}"]}))
        assert json.loads(await ws.recv())["type"] == "subscribed"
        return ws

    async def register_at_county(self, patient_id: str, serial: int) -> None:
        """The neighbouring county hospital's HIS registers the same person (ADT^A04) under its own patient id."""
        m = new_message(
            "ADT_A01",
            "2.5",
            {
                3: "HIS",
                4: "NL-C01-K02",
                5: "TELENET",
                6: "TELENET",
                7: format_ts(datetime.now(UTC)),
                9: "ADT^A04^ADT_A01",
                10: f"A{serial}",
                11: "P",
                18: "UNICODE UTF-8",
            },
        )
        set_field(m.add_segment("EVN"), 1, "A04")
        pid = m.add_segment("PID")
        for identifier in (f"{patient_id}^^^NL-C01-K02^PI", f"{national_id(serial)}^^^CHN^NNCHN"):
            pid.add_field("pid_3").value = identifier
        set_field(pid, 5, "张^三")
        set_field(pid, 8, "M")
        reader, writer = await asyncio.open_connection("127.0.0.1", self.hub.hl7_port)
        writer.write(frame(str(m.to_er7()).encode()))
        await writer.drain()
        ack = parse_ack(await asyncio.wait_for(read_frame(reader), 20) or b"")
        writer.close()
        assert ack.ack_code == "AA", ack


async def next_event(ws: Any, name: str, request_id: int | None = None) -> dict[str, Any]:
    for _ in range(50):
        message = json.loads(await asyncio.wait_for(ws.recv(), 30))
        data = message.get("data", {})
        if message.get("name") == name and (request_id is None or data.get("request_id") == request_id):
            return message
    raise AssertionError(f"no {name}")


async def wait_until(check: Any, what: str, seconds: float = 30.0) -> Any:
    for _ in range(int(seconds / 0.2)):
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


async def read_and_sign(story: Story, ws: Any, request_id: int, reader: str, report: dict[str, Any]) -> None:
    queued = await next_event(ws, "request.queued", request_id)
    assert queued["data"]["state"] == "queued"
    await story.call("POST", reader, f"/api/v1/requests/{request_id}/claim")
    final = await story.call("POST", reader, f"/api/v1/requests/{request_id}/report", {**report, "final": True})
    assert final["state"] == "final" and final["reports"][0]["digest"]


async def request_of(story: Story, accession: str) -> dict[str, Any]:
    async def find() -> Any:
        listing = await story.call("GET", "township_doc", "/api/v1/requests?limit=50")
        return next((i for i in listing["items"] if i["accession_number"] == accession), None)

    item = await wait_until(find, f"request {accession}")
    return dict(await story.call("GET", "township_doc", f"/api/v1/requests/{item['request_id']}"))


async def recognize_at_county(story: Story, request_id: int, county_patient: str) -> None:
    results = await story.call(
        "GET", "county2_doc", f"/api/v1/patients/{county_patient}/recognizable-results?at=NL-C01-K02"
    )
    item = next(i for i in results["items"] if i["result_request_id"] == request_id)
    assert item["recognizable"], item
    decision = await story.call(
        "POST",
        "county2_doc",
        "/api/v1/recognitions",
        {"result_request_id": request_id, "patient_id": county_patient, "decision": "recognized"},
        status=201,
    )
    assert decision["fee_avoided_fen"] == item["fee_avoided_fen"] > 0


async def test_imaging_ecg_and_consultation_stories(hub: Any, orthanc: Orthanc) -> None:
    township = Township(
        "NL-C01-K01-T01", "乡镇卫生院", "C01K01T01", "NL-C01-K01-T01", hub.his_port, "township_doc", "his_t01"
    )
    async with aiohttp.ClientSession() as http:
        story = Story(hub, http)
        his = ResultListener(hub.his_port, lambda acc, status, name: story.results.append((acc, status, name)))
        await his.start()
        sender = OrderSender("127.0.0.1", hub.hl7_port, township)
        imaging_ws = await story.worklist_socket("NL-C01-K01-IMG")
        ecg_ws = await story.worklist_socket("NL-C01-K01-ECG")
        try:
            # --- imaging: HL7 order, worklist, C-STORE + MPPS, forward to Orthanc, read, ORU ---------------
            dx = Order(
                "E2EDX0001", "imaging", "DX", "routine", "T01-0001", "张", "三", "M", "19650312", national_id(11)
            )
            assert await sender.send(dx) == "AA"
            study_uid = await asyncio.to_thread(
                perform_imaging, "C01K01T01", "127.0.0.1", hub.dicom_port, "TELENET", "E2EDX0001"
            )
            dx_request = await request_of(story, "E2EDX0001")
            await read_and_sign(
                story,
                imaging_ws,
                dx_request["id"],
                "county_reader",
                {"findings": "双肺纹理清晰。", "impression": "胸部未见异常。"},
            )
            assert (await request_of(story, "E2EDX0001"))["data_completed_by"] == "mpps"

            async def forwarded() -> bool:
                return study_uid in await asyncio.to_thread(orthanc.study_uids)

            await wait_until(forwarded, "the study in Orthanc")

            # --- ECG: HL7 order, the 12-lead waveform, read at the county ECG center, ORU ---------------------
            ecg = Order("E2EECG0001", "ecg", "ECG", "stat", "T01-0002", "李", "四", "F", "19700101", national_id(12))
            assert await sender.send(ecg) == "AA"
            await asyncio.to_thread(
                send_ecg, "C01K01T01", "127.0.0.1", hub.dicom_port, "TELENET", "E2EECG0001", "T01-0002", "李^四"
            )
            ecg_request = await request_of(story, "E2EECG0001")
            # a junior reader finds an acute STEMI and raises it at once, before any senior signs
            eid = ecg_request["id"]
            await next_event(ecg_ws, "request.queued", eid)
            await story.call("POST", "junior_reader", f"/api/v1/requests/{eid}/claim")
            raised = await story.call(
                "POST", "junior_reader", f"/api/v1/requests/{eid}/critical", {"items": ["急性ST段抬高型心肌梗死"]}, 201
            )

            async def critical_at_his() -> bool:
                return ("E2EECG0001", "P") in {(acc, status) for acc, status, _ in story.results}

            await wait_until(critical_at_his, "the critical finding (ORU status P) at the township HIS")
            await story.call(
                "POST",
                "county_reader",
                f"/api/v1/critical/{raised['id']}/calls",
                {
                    "callee": "李青山",
                    "callee_role": "值班医生",
                    "read_back": "急性ST段抬高型心肌梗死",
                    "confirmed": True,
                },
                201,
            )
            await story.call(
                "POST", "township_doc", f"/api/v1/critical/{raised['id']}/ack", {"read_back_by": "李青山"}, 422
            )
            acked = await story.call(
                "POST",
                "township_doc",
                f"/api/v1/critical/{raised['id']}/ack",
                {"read_back_by": "李青山", "read_back": "急性ST段抬高型心肌梗死"},
            )
            assert [t["event"] for t in acked["timeline"]] == [
                "critical.raised",
                "critical.called",
                "critical.acknowledged",
            ]
            ecg_report = {
                "findings": "窦性心律。V1-V4 ST段抬高。",
                "impression": "急性前壁ST段抬高型心肌梗死。",
                "structured": {"rhythm": "窦性心律", "rate_bpm": 61},
                "critical": True,
                "critical_items": ["急性ST段抬高型心肌梗死"],
            }
            await story.call("POST", "junior_reader", f"/api/v1/requests/{eid}/report", {**ecg_report, "final": False})
            await story.call("POST", "county_coord", f"/api/v1/requests/{eid}/release")
            await story.call("POST", "county_reader", f"/api/v1/requests/{eid}/claim")
            signed = await story.call(
                "POST", "county_reader", f"/api/v1/requests/{eid}/report", {**ecg_report, "final": True}
            )
            assert len(signed["critical_findings"]) == 1, "the signed report does not raise the finding twice"
            assert (signed["reports"][-1]["preliminary_author"], signed["reports"][-1]["signer"]) == (
                "赵晓雨",
                "陈立明",
            )

            async def both_results() -> bool:
                return {acc for acc, status, _ in story.results if status == "F"} >= {"E2EDX0001", "E2EECG0001"}

            await wait_until(both_results, "both ORU^R01 at the township HIS")
            assert any(name.startswith("张") for acc, _, name in story.results if acc == "E2EDX0001")

            # --- consultation over REST, as a session: the clinic proposes a time, the consultant center agrees,
            # a second center's specialist is invited (MDT), the session starts, the opinion is signed ----------
            wished = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
            consult = await story.call(
                "POST",
                "township_doc",
                "/api/v1/requests",
                {
                    "kind": "consultation",
                    "priority": "urgent",
                    "subspecialty": "cardiology",
                    "clinical_question": "反复胸闷，请协助诊治",
                    "patient": {"id": "T01-0001", "name": "张三", "national_id": national_id(11)},
                    "consent": {"given_by": "患者本人", "given_at": datetime.now(UTC).isoformat()},
                    "scheduled_at": wished.isoformat(),
                },
                status=201,
            )
            consultant = CONSULTANTS[consult["center"]["code"]]
            session = f"/api/v1/consultations/{consult['id']}"
            guest_center, guest = next((c, u) for c, u in CONSULTANTS.items() if c != consult["center"]["code"])
            await story.call("POST", "township_doc", f"{session}/centers", {"center": guest_center})
            await story.call("POST", "township_doc", f"{session}/participants", {"username": guest})
            await story.call("POST", consultant, f"{session}/time/agree")
            await story.call("POST", consultant, f"/api/v1/requests/{consult['id']}/claim")
            await story.call("POST", consultant, f"{session}/start")
            assert (await story.call("GET", guest, session))["phase"] == "in_session"
            opinion = await story.call(
                "POST",
                consultant,
                f"/api/v1/requests/{consult['id']}/report",
                {"findings": "会诊意见：考虑稳定型心绞痛。", "impression": "建议冠脉CTA。", "final": True},
            )
            assert opinion["state"] == "final"
            done = await story.call("GET", "township_doc", session)
            assert done["phase"] == "opinion" and done["agreed"]["by"] == consultant
            assert [s["action"] for s in done["timeline"]] == [
                "propose", "center_invited", "participant_added", "agree", "start", "opinion",
            ]  # fmt: skip
        finally:
            await imaging_ws.close()
            await ecg_ws.close()
            await sender.close()
            await his.stop()

        # --- fees: one line per final report, split by the agreement ------------------------------------------
        fees = await story.call("GET", "county_admin", "/api/v1/fees?institution=NL-C01-K01-T01")
        charged = {line["request_id"]: line for line in fees["items"] if line["kind"] == "charge"}
        for request in (dx_request, ecg_request):
            line = charged[request["id"]]
            assert (
                line["invited"]["code"] == "NL-C01-K01"
                and line["inviting_fen"] + line["invited_fen"] == (line["price_fen"])
            )

        # --- the neighbouring county hospital (same tier as the reading center) recognizes the results --------
        await story.register_at_county("K02-7788", 11)
        await recognize_at_county(story, dx_request["id"], "K02-7788")
        await story.register_at_county("K02-7799", 12)
        await recognize_at_county(story, ecg_request["id"], "K02-7799")

        # --- the assessment figures count all of it ----------------------------------------------------------
        figures = await story.call("GET", "city_coord", "/api/v1/stats/assessment?institution=NL-C01")
        assert figures["volumes"]["by_kind"]["imaging"] >= 1 and figures["volumes"]["by_kind"]["ecg"] >= 1
        assert figures["volumes"]["by_kind"]["consultation"] >= 1
        assert figures["recognition"]["recognized"] == 2
        assert figures["fees"]["charges"] >= 2
