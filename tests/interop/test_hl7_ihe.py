"""IHE Scheduled Workflow over HL7 with python-hl7 as the township HIS (a library nobody here wrote), in
v2.3.1 and v2.5.1: a two-group order (RAD-2), an all-or-nothing refusal naming group 2, XO before and after
the claim, DC, status messages (RAD-3, ORC-1 SC) received in order by the HIS's MLLP listener with the ORU,
A40 (RAD-12) with requests on both ids and its revert by an admin, then ORR^O02 for a facility that wants it
(one hub per version and story: starting the HL7 gateway's process pool is most of each test's time)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import hl7
import hl7.mllp
import pytest
from sqlalchemy import select, update

from telenet.app import HL7_GATEWAY, build_app
from telenet.config import Settings
from telenet.store.models import Institution, Patient, PatientMerge, Request
from tests.conftest import TEST_PASSWORD
from tests.integration.test_hl7_outbox import HIS, TOWNSHIP, RunningClock

pytestmark = pytest.mark.interop

VERSIONS = pytest.mark.parametrize("version", ["2.3.1", "2.5.1"])
FINAL = {"findings": "双肺纹理增多。", "impression": "支气管炎改变。", "final": True}


def msh(version: str, message_type: str, control_id: str) -> str:
    code, event = message_type.split("^")
    structure = {"ORM": "ORM_O01", "ADT": "ADT_A39" if event == "A40" else "ADT_A01"}[code]
    msh_9 = f"{code}^{event}^{structure}" if version != "2.3.1" else f"{code}^{event}"
    head = f"MSH|^~\\&|HIS|{TOWNSHIP}|TELENET|TELENET|20261201090000||{msh_9}|{control_id}|P|{version}"
    return head + "|||||CHN|UNICODE UTF-8"


def pid(patient_id: str, name: str = "张^三") -> str:
    ids = f"{patient_id}^^^{TOWNSHIP}^PI~MR{patient_id}^^^{TOWNSHIP}^MR~450102196503121234^^^CHN^NNCHN"
    return f"PID|1||{ids}||{name}||19650312|M"


def group(control: str, placer: str, *, code: str = "DX0001^胸部正位片", modality: str = "DX", priority: str = "R",
          question: str = "咳嗽两周", body: str = "CHEST", reason: str = "") -> str:  # fmt: skip
    orc = f"ORC|{control}|{placer}^HIS|||||^^^^^{priority}||20261201090000|||D0101^李^建国"
    if reason:
        orc += f"||||^{reason}"
    obr = f"OBR|1|{placer}^HIS||{code}|||||||||{question}||^^^{body}|D0101^李^建国||||||||{modality}|||^^^^^{priority}"
    return f"{orc}\r{obr}"


def message(*segments: str) -> hl7.Message:
    return hl7.parse("\r".join(segments))


@dataclass
class Hospital:
    """The hub with its HL7 listener, the township HIS (client and listener), and REST access."""

    api: Any
    hub: Any
    his: HIS
    reader: Any
    writer: Any
    tokens: dict[str, str]

    async def send(self, msg: hl7.Message) -> hl7.Message:
        self.writer.writemessage(msg)
        await self.writer.drain()
        ack: hl7.Message = await asyncio.wait_for(self.reader.readmessage(), 30)
        return ack

    async def auth(self, username: str) -> dict[str, str]:
        if username not in self.tokens:
            resp = await self.api.post("/api/v1/auth/token", json={"username": username, "password": TEST_PASSWORD})
            self.tokens[username] = (await resp.json())["token"]
        return {"Authorization": f"Bearer {self.tokens[username]}"}

    async def post(self, path: str, username: str, body: dict[str, Any] | None = None) -> Any:
        resp = await self.api.post(path, json=body or {}, headers=await self.auth(username))
        return resp.status, await resp.json()

    async def request(self, placer: str) -> Request:
        async with self.hub.sessions() as session:
            return (await session.execute(select(Request).where(Request.accession_number == placer))).scalar_one()

    async def received(self, count: int) -> list[hl7.Message]:
        for _ in range(300):
            if len(self.his.received) >= count:
                break
            await asyncio.sleep(0.1)
        return list(self.his.received)


@pytest.fixture
# The database comes first so that it is torn down last: the app (and its HL7 sender) stops before the schema goes.
async def hospital(demo_hub: Any, database: Any, settings: Settings, aiohttp_client: Any) -> AsyncIterator[Hospital]:
    his = HIS()
    port = await his.start()
    async with demo_hub.sessions() as session:
        await session.execute(
            update(Institution).where(Institution.code == TOWNSHIP).values(hl7_port=port, hl7_order_status=True)
        )
        await session.commit()
    app = build_app(
        settings.replace(hl7_enabled=True, hl7_port=0, hl7_workers=1, hl7_ack_timeout_seconds=5.0),
        engine=database.engine,
        clock=RunningClock(),
    )
    api = await aiohttp_client(app)
    reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", app[HL7_GATEWAY].port, encoding="utf-8")
    try:
        yield Hospital(api, demo_hub, his, reader, writer, {})
    finally:
        writer.close()
        await writer.wait_closed()
        await his.stop()


def msa(ack: hl7.Message) -> tuple[str, str]:
    return str(ack.segment("MSA")[1]), str(ack.segment("MSA")[2])


def err_location(ack: hl7.Message, version: str) -> str:
    err = ack.segment("ERR")
    return str(err[2]) if version != "2.3.1" else str(err[1]).split("^&")[0]


async def consent(h: Hospital, placer: str, version: str) -> None:
    """v2.3.1 has no CON segment: consent is recorded over REST, as a township clinic does."""
    request = await h.request(placer)
    body = {"given_by": "张三", "given_at": "2026-12-01T09:00:00+08:00"}
    status, view = await h.post(f"/api/v1/requests/{request.id}/consent", "his_t01", body)
    assert status == 200, view


@VERSIONS
async def test_two_groups_xo_dc_and_status_in_order(hospital: Hospital, version: str) -> None:
    h, v = hospital, version.replace(".", "")
    dx, ct = f"ORD{v}-DX1", f"ORD{v}-CT1"
    two = message(msh(version, "ORM^O01", f"M{v}-1"), pid(f"P{v}"), group("NW", dx),
                  group("NW", ct, code="CT0007^头颅CT平扫", modality="CT", body="HEAD", question="头痛"))  # fmt: skip
    assert msa(await h.send(two)) == ("AA", f"M{v}-1")
    first, second = await h.request(dx), await h.request(ct)
    assert (first.modality, second.modality, second.body_part) == ("DX", "CT", "HEAD")
    assert (first.placer_order_number, second.placer_order_number) == (dx, ct)

    # All or nothing: a bad second group refuses the whole message and names group 2.
    bad = message(msh(version, "ORM^O01", f"M{v}-2"), pid(f"P{v}"), group("NW", f"ORD{v}-DX2"),
                  group("NW", f"ORD{v}-DX3", modality="ZZ"))  # fmt: skip
    ack = await h.send(bad)
    assert msa(ack) == ("AE", f"M{v}-2")
    assert err_location(ack, version).startswith("OBR^2^24")
    async with h.hub.sessions() as session:
        taken = (await session.execute(select(Request.id).where(Request.accession_number == f"ORD{v}-DX2"))).all()
    assert taken == []

    for placer in (dx, ct):
        await consent(h, placer, version)
    # XO before the claim: new priority and clinical question.
    xo = message(msh(version, "ORM^O01", f"M{v}-3"), pid(f"P{v}"), group("XO", dx, priority="S", question="咯血"))
    assert msa(await h.send(xo)) == ("AA", f"M{v}-3")
    changed = await h.request(dx)
    assert (changed.priority, changed.clinical_question) == ("stat", "咯血")

    status, _ = await h.post(f"/api/v1/requests/{changed.id}/data-complete", "his_t01", {"signal": "api"})
    assert status == 200
    status, _ = await h.post(f"/api/v1/requests/{changed.id}/claim", "county_reader")
    assert status == 200
    # XO after the claim: AE with the reason, nothing changed.
    late = message(msh(version, "ORM^O01", f"M{v}-4"), pid(f"P{v}"), group("XO", dx, priority="R", question="复查"))
    ack = await h.send(late)
    assert msa(ack) == ("AE", f"M{v}-4")
    assert "claimed by a reader" in str(ack.segment("MSA")[3])
    assert (await h.request(dx)).clinical_question == "咯血"

    # DC of the CT (ordered, not claimed): cancelled, the status says discontinued.
    dc = message(msh(version, "ORM^O01", f"M{v}-5"), pid(f"P{v}"), group("DC", ct, reason="患者转院"))
    assert msa(await h.send(dc)) == ("AA", f"M{v}-5")
    assert (await h.request(ct)).state == "cancelled"

    status, _ = await h.post(f"/api/v1/requests/{changed.id}/report", "county_reader", FINAL)
    assert status == 200
    received = await h.received(5)
    kinds = [
        (str(m.segment("MSH")[9]).split("^")[0], str(m.segment("ORC")[1]), str(m.segment("ORC")[5]),
         str(m.segment("ORC")[2]).split("^")[0])
        for m in received
    ]  # fmt: skip
    assert kinds == [
        ("ORM", "SC", "SC", dx),
        ("ORM", "SC", "IP", dx),
        ("ORM", "SC", "DC", ct),
        ("ORM", "SC", "CM", dx),
        ("ORU", "RE", "CM", dx),
    ]
    assert all(str(m.segment("MSH")[12]) == version for m in received[:4])
    # The ORU names the study the worklist handed out (and the images carry): one identifier across RAD-4/5/8/128.
    study_uids = [str(o[5]) for o in received[4].segments("OBX") if str(o[3]).startswith("113014")]
    assert study_uids == [(await h.request(dx)).study_instance_uid] and study_uids[0].startswith("2.25.")
    assert str(received[0].segment("PID")[5]) == "张^三"


@VERSIONS
async def test_a40_merge_and_revert_then_orr_for_a_facility_that_wants_it(hospital: Hospital, version: str) -> None:
    h, v = hospital, version.replace(".", "")
    keep, old = f"K{v}", f"O{v}"
    for patient_id, placer, n in ((keep, f"A{v}-1", 1), (old, f"A{v}-2", 2), (old, f"A{v}-3", 3)):
        orm = message(msh(version, "ORM^O01", f"A{v}-M{n}"), pid(patient_id), group("NW", placer))
        assert msa(await h.send(orm)) == ("AA", f"A{v}-M{n}")
    a40 = message(
        msh(version, "ADT^A40", f"A{v}-MERGE"),
        "EVN|A40|20261201100000",
        pid(keep),
        f"MRG|{old}^^^{TOWNSHIP}^PI",
    )
    assert msa(await h.send(a40)) == ("AA", f"A{v}-MERGE")
    hub = h.hub
    async with hub.sessions() as session:
        survivor = (await session.execute(select(Patient).where(Patient.his_id == keep))).scalar_one()
        merged = (await session.execute(select(Patient).where(Patient.his_id == old))).scalar_one()
        owners = dict((await session.execute(select(Request.accession_number, Request.patient_id))).all())
        merge_row = (await session.execute(select(PatientMerge))).scalar_one()
    assert owners == {f"A{v}-1": survivor.id, f"A{v}-2": survivor.id, f"A{v}-3": survivor.id}
    assert merged.merged_into_id == survivor.id and survivor.identifiers == {"PI": keep, "MR": f"MR{keep}"}
    assert sorted(merge_row.moved["requests"]) == sorted(
        [(await h.request(f"A{v}-2")).id, (await h.request(f"A{v}-3")).id]
    )
    late = message(msh(version, "ORM^O01", f"A{v}-M4"), pid(old), group("NW", f"A{v}-4"))
    assert msa(await h.send(late)) == ("AA", f"A{v}-M4")
    assert (await h.request(f"A{v}-4")).patient_id == survivor.id, "an order for the merged id goes to the survivor"

    # The surviving id's requests are all one patient's now, in the clinic's list.
    listed = await (await h.api.get("/api/v1/requests", headers=await h.auth("township_doc"))).json()
    names = {item["accession_number"] for item in listed["items"]}
    assert {f"A{v}-1", f"A{v}-2", f"A{v}-3"} <= names

    # A merge of an unknown id is an AE naming it; the clinic's doctor may not revert, the admin may.
    again = message(msh(version, "ADT^A40", f"A{v}-MERGE2"), "EVN|A40|20261201100000", pid(keep), "MRG|NOBODY")
    ack = await h.send(again)
    assert msa(ack) == ("AE", f"A{v}-MERGE2") and "NOBODY" in str(ack.segment("MSA")[3])
    status, _ = await h.post(f"/api/v1/patients/merges/{merge_row.id}/revert", "township_doc")
    assert status == 403
    status, view = await h.post(f"/api/v1/patients/merges/{merge_row.id}/revert", "county_admin")
    assert status == 200 and view["reverted_by"] == "county_admin"
    async with hub.sessions() as session:
        owners = dict((await session.execute(select(Request.accession_number, Request.patient_id))).all())
        merged = (await session.execute(select(Patient).where(Patient.his_id == old))).scalar_one()
    assert owners == {f"A{v}-1": survivor.id, f"A{v}-2": merged.id, f"A{v}-3": merged.id, f"A{v}-4": survivor.id}
    assert merged.merged_into_id is None
    status, _ = await h.post(f"/api/v1/patients/merges/{merge_row.id}/revert", "county_admin")
    assert status == 409
    listed = await (await h.api.get("/api/v1/patients/merges", headers=await h.auth("county_admin"))).json()
    assert [item["id"] for item in listed["items"]] == [merge_row.id]

    # The same HIS now expects the order response message (ORR^O02) instead of an ACK.
    async with h.hub.sessions() as session:
        await session.execute(update(Institution).where(Institution.code == TOWNSHIP).values(hl7_ack_mode="orr"))
        await session.commit()
    two = message(msh(version, "ORM^O01", f"R{v}-1"), pid(f"R{v}"), group("NW", f"R{v}-DX"),
                  group("NW", f"R{v}-CT", modality="CT"))  # fmt: skip
    orr = await h.send(two)
    assert str(orr.segment("MSH")[9]).split("^")[:2] == ["ORR", "O02"]
    assert msa(orr) == ("AA", f"R{v}-1")
    assert [(str(o[1]), str(o[2]), str(o[3])) for o in orr.segments("ORC")] == [
        ("OK", f"R{v}-DX", f"R{v}-DX"),
        ("OK", f"R{v}-CT", f"R{v}-CT"),
    ]
    xo = message(msh(version, "ORM^O01", f"R{v}-2"), pid(f"R{v}"), group("XO", f"R{v}-NONE", priority="S"))
    orr = await h.send(xo)
    assert msa(orr) == ("AE", f"R{v}-2") and str(orr.segment("ORC")[1]) == "UX"
