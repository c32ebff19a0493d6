"""python-hl7 (a library nobody here wrote) as the township HIS, end to end: its asyncio MLLP client sends
ADT, ORM and OMI with 张三 and gets AA; its MLLP server receives the ORU^R01 of the report a reader signs
over REST, with the same accession number and the name intact."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import hl7
import hl7.mllp
import pytest

from telenet.app import HL7_GATEWAY, build_app
from telenet.config import Settings
from tests.conftest import TEST_PASSWORD
from tests.integration.test_hl7_outbox import HIS, RunningClock, point_township_at

pytestmark = pytest.mark.interop

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7"
FACILITY = "NL-C01-K01-T01"
CONSENT = "CON|1|IMG^影像检查知情同意^L||||||||W|A||20260302095000"


def his_message(name: str, **replace: str) -> hl7.Message:
    """A fixture as the HIS sends it: our township's facility id, 张三, CR-separated, parsed by python-hl7."""
    text = (FIXTURES / name).read_bytes().decode("utf-8").replace("GX-TS-0101", FACILITY)
    for old, new in replace.items():
        text = text.replace(old, new)
    return hl7.parse(text.rstrip("\r"))


async def exchange(reader: Any, writer: Any, message: hl7.Message) -> hl7.Message:
    writer.writemessage(message)
    await writer.drain()
    ack: hl7.Message = await asyncio.wait_for(reader.readmessage(), 30)
    return ack


async def test_his_orders_over_mllp_and_receives_the_signed_result(
    aiohttp_client: Any, demo_hub: Any, settings: Settings, database: Any
) -> None:
    his = HIS()
    await point_township_at(demo_hub, await his.start())
    app = build_app(
        settings.replace(hl7_enabled=True, hl7_port=0, hl7_workers=1),
        engine=database.engine,
        clock=RunningClock(),
    )
    api = await aiohttp_client(app)
    tokens: dict[str, str] = {}

    async def auth(username: str) -> dict[str, str]:
        if username not in tokens:
            resp = await api.post("/api/v1/auth/token", json={"username": username, "password": TEST_PASSWORD})
            tokens[username] = (await resp.json())["token"]
        return {"Authorization": f"Bearer {tokens[username]}"}

    reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", app[HL7_GATEWAY].port, encoding="utf-8")
    try:
        adt = his_message("adt_a04.hl7")
        orm = his_message(
            "orm_o01_new_dx.hl7",
            **{"|P|2.4|": "|P|2.5|", "GXTS0101-DX-20240315-0001": "HIS-ORM-0001", "^^^^^R\r": f"^^^^^R\r{CONSENT}"},
        )
        omi = his_message(
            "omi_o23_new_ct_251.hl7",
            **{
                "GX-CO-0101": FACILITY,
                "GXCO0101-CT-20240315-0007": "HIS-OMI-0001",
                "陆^文华": "张^三",
                "450103195011023016": "450102196503121234",
            },
        )
        for message in (adt, orm, omi):
            ack = await exchange(reader, writer, message)
            assert str(ack.segment("MSA")[1]) == "AA", str(ack)
            assert str(ack.segment("MSA")[2]) == str(message.segment("MSH")[10])
    finally:
        writer.close()
        await writer.wait_closed()

    listed = await (await api.get("/api/v1/requests", headers=await auth("township_doc"))).json()
    by_accession = {item["accession_number"]: item for item in listed["items"]}
    assert by_accession["HIS-ORM-0001"]["state"] == "ordered" and by_accession["HIS-OMI-0001"]["priority"] == "urgent"
    request_id = by_accession["HIS-ORM-0001"]["request_id"]
    view = await (await api.get(f"/api/v1/requests/{request_id}", headers=await auth("township_doc"))).json()
    assert view["patient"]["name"] == "张三" and view["center"]["code"] == "NL-C01-K01-IMG"

    # The images arrive (the DICOM gateway's signal, sent here by the integration account), a reader signs.
    resp = await api.post(
        f"/api/v1/requests/{request_id}/data-complete", json={"signal": "api"}, headers=await auth("his_t01")
    )
    assert resp.status == 200 and (await resp.json())["state"] == "queued"
    resp = await api.post(f"/api/v1/requests/{request_id}/claim", json={}, headers=await auth("county_reader"))
    assert resp.status == 200, await resp.text()
    report = {"findings": "双肺纹理增多。", "impression": "支气管炎改变，请结合临床。", "final": True}
    resp = await api.post(f"/api/v1/requests/{request_id}/report", json=report, headers=await auth("county_reader"))
    assert resp.status == 200 and (await resp.json())["state"] == "final"

    try:
        for _ in range(300):
            if his.received:
                break
            await asyncio.sleep(0.1)
        assert len(his.received) == 1
        oru = his.received[0]
        assert str(oru.segment("MSH")[9]) == "ORU^R01^ORU_R01" and str(oru.segment("MSH")[6]) == FACILITY
        assert str(oru.segment("OBR")[3]) == "HIS-ORM-0001" and str(oru.segment("OBR")[2]) == "HIS-ORM-0001"
        assert str(oru.segment("OBR")[4]) == "DX0001^胸部正位片" and str(oru.segment("OBR")[25]) == "F"
        assert str(oru.segment("PID")[5]) == "张^三" and str(oru.segment("PID")[3]) == "TS0101-000123"
        text = [str(obx[5]) for obx in oru.segments("OBX") if str(obx[2]) == "TX"]
        assert text == ["双肺纹理增多。", "支气管炎改变，请结合临床。"]
        study = [(str(obx[3]), str(obx[5])) for obx in oru.segments("OBX") if str(obx[2]) == "HD"]
        assert len(study) == 1 and study[0][0] == "113014^DICOM Study^DCM" and study[0][1].startswith("2.25.")
        for _ in range(100):
            outbox = await (
                await api.get("/api/v1/hl7/outbox?status=delivered", headers=await auth("county_admin"))
            ).json()
            if outbox["items"]:
                break
            await asyncio.sleep(0.1)
        assert [item["accession_number"] for item in outbox["items"]] == ["HIS-ORM-0001"]
    finally:
        await his.stop()
