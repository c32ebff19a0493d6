"""The HL7 listener over a real socket, inside the whole app: framing, many messages and connections, the
broken corpus, idempotency, scope and the service effects (orders routed, cancels, patients), dead letters."""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select, text, update

from gateways.hl7.mllp import frame, read_frame
from gateways.hl7.server import HL7Gateway
from telenet.api.context import HUB
from telenet.app import HL7_GATEWAY, build_app
from telenet.config import Settings
from telenet.domain.patients import mask_national_ids
from telenet.services.hl7_inbound import record_dead_letter
from telenet.sim import actors, his
from telenet.sim.run import _national_id
from telenet.sim.world import Township
from telenet.store.models import HL7DeadLetter, HL7InboundMessage, Patient, Request
from tests.conftest import TEST_PASSWORD

SQLITE_ONLY = pytest.mark.parametrize("database", ["sqlite"], indirect=True)
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7"
FACILITY = "NL-C01-K01-T01"  # hl7_facility of the township 清溪镇卫生院 (integration account his_t01)
CONSENT = "CON|1|IMG^影像检查知情同意^L||||||||W|A||20260302095000\r"


def fixture(name: str, charset: str = "utf-8") -> str:
    return (FIXTURES / name).read_bytes().decode(charset)


def orm(
    control_id: str,
    accession: str,
    *,
    patient_id: str = "TS0101-000123",
    name: str = "张^三",
    consent: bool = True,
    facility: str = FACILITY,
    control: str = "NW",
) -> bytes:
    """ORM^O01 (v2.5, so that it may carry CON) from the DX fixture, for the demo township."""
    text = fixture("orm_o01_new_dx.hl7")
    text = text.replace("GX-TS-0101", facility).replace("ORM20240315000101", control_id)
    text = text.replace("GXTS0101-DX-20240315-0001", accession).replace("|P|2.4|", "|P|2.5|")
    text = text.replace("TS0101-000123", patient_id).replace("张^三", name).replace("ORC|NW|", f"ORC|{control}|")
    return (text + (CONSENT if consent else "")).encode()


def adt(control_id: str, event: str = "A04", name: str = "张^三") -> bytes:
    text = fixture("adt_a04.hl7").replace("GX-TS-0101", FACILITY).replace("ADT20240315000001", control_id)
    return text.replace("ADT^A04^ADT_A01", f"ADT^{event}^ADT_A01").replace("张^三", name).encode()


def segments(ack: bytes, charset: str = "utf-8") -> dict[str, list[str]]:
    out = {}
    for line in ack.decode(charset).split("\r"):
        if line:
            fields = line.split("|")
            if fields[0] == "MSH":
                fields.insert(1, "|")
            out.setdefault(fields[0], fields)
    return out


class Peer:
    """A HIS connection speaking MLLP with our framing (python-hl7 is the peer in tests/interop)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Peer:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        return cls(reader, writer)

    async def send(self, message: bytes) -> bytes:
        self.writer.write(frame(message))
        await self.writer.drain()
        ack = await asyncio.wait_for(read_frame(self.reader), 30)
        assert ack is not None, "the listener closed the connection instead of answering"
        return ack

    async def closed_by_listener(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 10) == b""

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def hl7_settings(settings: Settings, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "hl7_enabled": True,
        "hl7_port": 0,
        "hl7_workers": 2,
        "hl7_idle_timeout_seconds": 30.0,
        "hl7_max_message_bytes": 64 * 1024,
    }
    return settings.replace(**(values | overrides))


@pytest.fixture
async def hl7(aiohttp_client: Any, demo_hub: Any, settings: Settings, database: Any, clock: Any) -> Any:
    """The whole app with the HL7 gateway listening on a free port; ``hl7.hl7_port``, ``hl7.login(user)``."""
    app = build_app(hl7_settings(settings), engine=database.engine, clock=clock, background=True)
    cli = await aiohttp_client(app)
    cli.gateway = app[HL7_GATEWAY]
    cli.hl7_port = cli.gateway.port
    cli.hub = demo_hub
    tokens: dict[str, str] = {}

    async def login(username: str) -> dict[str, str]:
        if username not in tokens:
            resp = await cli.post("/api/v1/auth/token", json={"username": username, "password": TEST_PASSWORD})
            assert resp.status == 200, await resp.text()
            tokens[username] = (await resp.json())["token"]
        return {"Authorization": f"Bearer {tokens[username]}"}

    cli.login = login
    return cli


@pytest.fixture
async def peer(hl7: Any) -> AsyncIterator[Peer]:
    connection = await Peer.open(hl7.hl7_port)
    yield connection
    await connection.close()


async def request_by_accession(hub: Any, accession: str) -> Request | None:
    async with hub.sessions() as session:
        found: Request | None = (
            await session.execute(select(Request).where(Request.accession_number == accession))
        ).scalar_one_or_none()
        return found


# ---------------------------------------------------------------------------------------------- orders


async def test_order_is_routed_and_acknowledged(hl7: Any, peer: Peer) -> None:
    ack = await peer.send(orm("ORD-1", "HIS-DX-0001"))
    segs = segments(ack)
    assert segs["MSA"][1:3] == ["AA", "ORD-1"]
    assert segs["MSH"][9] == "ACK^O01^ACK" and segs["MSH"][6] == FACILITY and segs["MSH"][12] == "2.5"
    request = await request_by_accession(hl7.hub, "HIS-DX-0001")
    assert request is not None
    view = await (await hl7.get(f"/api/v1/requests/{request.id}", headers=await hl7.login("township_doc"))).json()
    assert (view["state"], view["kind"], view["modality"], view["body_part"]) == ("ordered", "imaging", "DX", "CHEST")
    assert view["center"]["code"] == "NL-C01-K01-IMG" and view["route"][0]["action"] == "route"
    assert view["patient"]["name"] == "张三" and view["patient"]["id"] == "TS0101-000123"
    assert view["clinical_question"] == "咳嗽两周伴低热，排除肺部感染"
    assert view["consent"]["given_by"] == "张三"
    assert view["consent"]["given_at"] == "2026-03-02T01:50:00+00:00"  # 09:50 in the HIS's +08:00
    assert view["requester"] == "清溪镇卫生院HIS接口"


async def test_many_connections_at_once(hl7: Any) -> None:
    async def one_his(n: int) -> list[list[str]]:
        connection = await Peer.open(hl7.hl7_port)
        try:
            return [
                segments(await connection.send(orm(f"C{n}-{i}", f"HIS-C{n}-{i}", patient_id=f"P{n}")))["MSA"]
                for i in range(2)
            ]
        finally:
            await connection.close()

    results = await asyncio.gather(*(one_his(n) for n in range(6)))
    for n, acks in enumerate(results):
        assert [a[1:3] for a in acks] == [["AA", f"C{n}-{i}"] for i in range(2)]
    async with hl7.hub.sessions() as session:
        count = await session.scalar(select(func.count()).where(Request.accession_number.like("HIS-C%")))
    assert count == 12


async def test_resent_message_gets_the_same_ack_and_changes_nothing(hl7: Any, peer: Peer) -> None:
    first = await peer.send(orm("DUP-1", "HIS-DX-0003"))
    again = await peer.send(orm("DUP-1", "HIS-DX-0003"))
    other = await Peer.open(hl7.hl7_port)
    try:
        third = await other.send(orm("DUP-1", "HIS-DX-0003"))
    finally:
        await other.close()
    assert first == again == third
    async with hl7.hub.sessions() as session:
        assert await session.scalar(select(func.count()).where(Request.accession_number == "HIS-DX-0003")) == 1
        logged = (await session.execute(select(HL7InboundMessage))).scalars().all()
    assert [(m.facility, m.message_control_id, m.ack_code) for m in logged] == [(FACILITY, "DUP-1", "AA")]
    assert logged[0].ack == first and logged[0].request_id is not None

    first = await peer.send(orm("DUP-2", "HIS-DX-0004", control="CA"))  # cancel of an unknown order
    assert segments(first)["MSA"][1] == "AE"
    await peer.send(orm("NEW-2", "HIS-DX-0004"))  # the order arrives later with its own MSH-10
    assert await peer.send(orm("DUP-2", "HIS-DX-0004", control="CA")) == first
    request = await request_by_accession(hl7.hub, "HIS-DX-0004")
    assert request is not None and request.state == "ordered"


async def test_the_same_message_at_once_on_several_connections_gets_one_ack_and_one_order(hl7: Any) -> None:
    # A long group wait puts the copies in one shared transaction: the second finds the first's log row in it.
    hl7.server.app[HUB].group_commit.wait_ms = 300.0
    peers = [await Peer.open(hl7.hl7_port) for _ in range(4)]
    try:
        acks = await asyncio.gather(*(p.send(orm("SAME-1", "HIS-DX-0030")) for p in peers))
    finally:
        for p in peers:
            await p.close()
    assert len(set(acks)) == 1 and segments(acks[0])["MSA"][1:3] == ["AA", "SAME-1"], acks
    async with hl7.hub.sessions() as session:
        assert await session.scalar(select(func.count()).where(Request.accession_number == "HIS-DX-0030")) == 1
        logged = (await session.execute(select(HL7InboundMessage.message_control_id))).scalars().all()
    assert logged == ["SAME-1"]


async def test_a_resent_or_refused_message_is_answered_while_a_writer_holds_the_lock(
    hl7: Any, peer: Peer, database: Any
) -> None:
    first = await peer.send(orm("HELD-1", "HIS-DX-0031"))
    async with database.engine.connect() as writer:
        # SQLite: BEGIN IMMEDIATE, the one write lock (a write transaction would wait out busy_timeout, 30 s);
        # PostgreSQL: the log table locked against every writer.
        if database.engine.dialect.name == "sqlite":
            await writer.execute(update(Request).values(clinical_question="锁住"))
        else:
            await writer.execute(text("LOCK TABLE hl7_inbound_messages IN EXCLUSIVE MODE"))
        again = await asyncio.wait_for(peer.send(orm("HELD-1", "HIS-DX-0031")), 20)
        unknown = segments(await asyncio.wait_for(peer.send(orm("HELD-2", "HIS-DX-0032", facility="GX-TS-9999")), 20))
        await writer.rollback()
    assert again == first and segments(first)["MSA"][1] == "AA"
    assert unknown["MSA"][1] != "AA" and unknown["ERR"][3].split("^")[0] == "204", unknown


@SQLITE_ONLY  # error mapping: storage is covered elsewhere
async def test_refusals_name_the_field(hl7: Any, peer: Peer) -> None:
    # Without consent the order is accepted, says so, and waits in ordered until consent is recorded.
    segs = segments(await peer.send(orm("NOCON-1", "HIS-DX-0005", consent=False)))
    assert segs["MSA"][1:3] == ["AA", "NOCON-1"] and "知情同意" in segs["MSA"][3]
    waiting = await request_by_accession(hl7.hub, "HIS-DX-0005")
    assert waiting is not None and waiting.state == "ordered" and waiting.consent_given_at is None

    refused = orm("NOCON-2", "HIS-DX-0006").replace(b"||||||||W|A||", b"||||||||W|R||")
    segs = segments(await peer.send(refused))
    assert (segs["MSA"][1], segs["ERR"][2], segs["ERR"][3].split("^")[0]) == ("AE", "CON^1^11", "103")
    assert await request_by_accession(hl7.hub, "HIS-DX-0006") is None

    long_accession = segments(await peer.send(orm("BAD-1", "GXTS0101-DX-20240315-0001")))
    assert (long_accession["MSA"][1], long_accession["ERR"][2]) == ("AE", "ORC^1^2")
    assert long_accession["ERR"][3].startswith("103^")
    await peer.send(orm("BAD-2", "HIS-DX-0007"))
    duplicate = segments(await peer.send(orm("BAD-3", "HIS-DX-0007")))
    assert (duplicate["MSA"][1], duplicate["ERR"][2], duplicate["ERR"][3].split("^")[0]) == ("AE", "ORC^1^2", "205")
    bad_id = orm("BAD-4", "HIS-DX-0008").replace(b"450102196503121234", b"450102196503121230")
    bad = segments(await peer.send(bad_id))
    assert (bad["MSA"][1], bad["ERR"][2], bad["ERR"][3].split("^")[0]) == ("AE", "PID^1^3", "103")
    no_question = orm("BAD-5", "HIS-DX-0009").replace("咳嗽两周伴低热，排除肺部感染".encode(), b"")
    missing = segments(await peer.send(no_question))
    assert (missing["MSA"][1], missing["ERR"][2], missing["ERR"][3].split("^")[0]) == ("AE", "OBR^1^13", "101")

    segs = segments(await peer.send(orm("UNK-1", "HIS-DX-0010", facility="GX-TS-9999")))
    assert segs["MSA"][1:3] == ["AE", "UNK-1"]
    assert segs["ERR"][2:4] == ["MSH^1^4", "204^Unknown key identifier^HL70357"]
    assert "GX-TS-9999" in segs["ERR"][8]
    assert await request_by_accession(hl7.hub, "HIS-DX-0010") is None

    segs = segments(await peer.send(orm("NOACC-1", "HIS-DX-0011", facility="NL-C01-K01-T02")))
    assert segs["MSA"][1] == "AE" and segs["ERR"][2] == "MSH^1^4"
    assert "integration account" in segs["ERR"][8]


async def test_several_messages_on_one_connection_cancels_and_scope(hl7: Any, peer: Peer) -> None:
    for i, message in enumerate([adt("CAN-0"), orm("CAN-1", "HIS-DX-0012"), orm("CAN-2", "HIS-DX-0012", control="CA")]):
        msa = segments(await peer.send(message))["MSA"]
        assert msa[1:3] == ["AA", f"CAN-{i}"], msa
    request = await request_by_accession(hl7.hub, "HIS-DX-0012")
    assert request is not None and request.state == "cancelled"
    again = segments(await peer.send(orm("CAN-3", "HIS-DX-0012", control="CA")))
    assert (again["MSA"][1], again["ERR"][3].split("^")[0]) == ("AE", "207")
    assert "illegal transition" in again["ERR"][8] and "cancelled" in again["ERR"][8]
    unknown = segments(await peer.send(orm("CAN-4", "HIS-DX-9999", control="CA")))
    assert (unknown["MSA"][1], unknown["ERR"][2], unknown["ERR"][3].split("^")[0]) == ("AE", "ORC^1^2", "204")

    resp = await hl7.post(
        "/api/v1/requests",
        json={
            "kind": "imaging",
            "modality": "DX",
            "priority": "routine",
            "clinical_question": "外院申请",
            "accession_number": "OTHER-0001",
            "patient": {"id": "X1", "name": "李四"},
            "consent": {"given_by": "李四", "given_at": "2026-03-02T09:00:00+08:00"},
        },
        headers=await hl7.login("village_doc"),
    )
    assert resp.status == 201, await resp.text()
    segs = segments(await peer.send(orm("SCOPE-1", "OTHER-0001", control="CA")))
    assert (segs["MSA"][1], segs["ERR"][3].split("^")[0]) == ("AE", "204")
    request = await request_by_accession(hl7.hub, "OTHER-0001")
    assert request is not None and request.state == "ordered"


# -------------------------------------------------------------------------------------------- patients


@SQLITE_ONLY  # character sets: storage is covered elsewhere
async def test_patients_and_gb18030_with_names_intact(hl7: Any, peer: Peer) -> None:
    assert segments(await peer.send(adt("ADT-1")))["MSA"][1:3] == ["AA", "ADT-1"]
    async with hl7.hub.sessions() as session:
        registered = (await session.execute(select(Patient.name).where(Patient.his_id == "TS0101-000123"))).scalar()
    assert registered == "张三"
    assert segments(await peer.send(adt("ADT-2", "A08", name="张^三丰")))["MSA"][1:3] == ["AA", "ADT-2"]
    async with hl7.hub.sessions() as session:
        patients = (await session.execute(select(Patient).where(Patient.his_id == "TS0101-000123"))).scalars().all()
    assert [(p.name, p.sex, str(p.birth_date), p.national_id_last4) for p in patients] == [
        ("张三丰", "M", "1965-03-12", "***4")
    ]

    text = fixture("orm_o01_gb18030.hl7", "gb18030").replace("GX-TS-0104", FACILITY).replace("|P|2.4|", "|P|2.5|")
    text = text.replace("GXTS0104-DX-20240317-0003", "HIS-GB-0001") + CONSENT
    segs = segments(await peer.send(text.encode("gb18030")), "gb18030")
    assert segs["MSA"][1:3] == ["AA", "ORM20240317000005"] and segs["MSH"][18] == "GB 18030-2000"
    request = await request_by_accession(hl7.hub, "HIS-GB-0001")
    assert request is not None and request.body_part == "LSPINE"
    async with hl7.hub.sessions() as session:
        patient = await session.get(Patient, request.patient_id)
    assert patient is not None and patient.name == "蒙丽萍"


# ------------------------------------------------------------------------------------ broken input


BROKEN = [
    ("no_msh.hl7", "AR", "", "100"),
    ("wrong_field_separator.hl7", "AR", "", "102"),
    ("truncated.hl7", "AR", "", "101"),
    ("wrong_version.hl7", "AR", "ORM20240315000301", "203"),
    ("unknown_type.hl7", "AR", "SIU20240315000001", "200"),
    ("invalid_utf8.hl7", "AR", "ADT20240315000099", "102"),
    ("missing_pid3.hl7", "AE", "ORM20240315000401", "101"),
]


@SQLITE_ONLY  # framing: no storage involved
async def test_broken_corpus_gets_the_right_acks_and_the_listener_keeps_serving(hl7: Any, peer: Peer) -> None:
    for name, code, control_id, error in BROKEN:
        data = (FIXTURES / "broken" / name).read_bytes().replace(b"GX-TS-0101", FACILITY.encode())
        segs = segments(await peer.send(data), "latin-1")
        assert segs["MSA"][1] == code, name
        assert segs["MSA"][2] == (control_id if name != "wrong_field_separator.hl7" else "ORM20240315000201"), name
        # ERR-3 from v2.5 on, MSA-6 before (the wrong separator's ACK answers in its v2.4)
        assert (segs["ERR"][3] if len(segs["ERR"]) > 3 else segs["MSA"][6]).split("^")[0] == error, name
    assert segments(await peer.send(orm("AFTER-1", "HIS-DX-0020")))["MSA"][1] == "AA"
    async with hl7.hub.sessions() as session:
        letters = (await session.execute(select(HL7DeadLetter).order_by(HL7DeadLetter.id))).scalars().all()
    assert len(letters) == 6  # the six AR; missing PID-3 is valid HL7 that is not acceptable (AE)
    assert all(letter.direction == "inbound" and letter.raw and letter.peer for letter in letters)
    assert letters[-1].raw == (FIXTURES / "broken" / "invalid_utf8.hl7").read_bytes().replace(
        b"GX-TS-0101", FACILITY.encode()
    )

    peer.writer.write(b"noise\r\n" + frame(adt("GARB-1")) + b"\x00\x00" + frame(adt("GARB-2")))
    await peer.writer.drain()
    acks = [await asyncio.wait_for(read_frame(peer.reader), 30) for _ in range(2)]
    assert [segments(a or b"")["MSA"][2] for a in acks] == ["GARB-1", "GARB-2"]
    peer.writer.write(b"\x0bMSH|^~\\&|HIS|")  # and EOF inside a frame: closed quietly
    await peer.writer.drain()
    peer.writer.write_eof()
    assert await peer.closed_by_listener()


@SQLITE_ONLY  # framing: no storage involved
async def test_oversize_frame_gets_ar_and_the_connection_is_closed(hl7: Any, peer: Peer) -> None:
    big = orm("BIG-1", "HIS-DX-0030") + b"NTE|1||" + b"x" * (100 * 1024) + b"\r"
    segs = segments(await peer.send(big))
    assert segs["MSA"][1:3] == ["AR", "BIG-1"]
    assert await peer.closed_by_listener()
    fresh = await Peer.open(hl7.hl7_port)
    try:
        assert segments(await fresh.send(orm("BIG-2", "HIS-DX-0031")))["MSA"][1] == "AA"
    finally:
        await fresh.close()


@SQLITE_ONLY  # framing: no storage involved
async def test_idle_connection_is_closed(demo_hub: Any, settings: Settings) -> None:
    gateway = HL7Gateway(demo_hub, hl7_settings(settings, hl7_idle_timeout_seconds=0.2), send=False)
    await gateway.start()
    try:
        idle = await Peer.open(gateway.port)
        assert await idle.closed_by_listener()
        busy = await Peer.open(gateway.port)
        assert segments(await busy.send(adt("IDLE-1")))["MSA"][1] == "AA"
        await busy.close()
    finally:
        await gateway.stop()


# ------------------------------------------------------------------------------------------ dead letters


async def test_dead_letters_listed_and_replayed_by_admins(hl7: Any, peer: Peer) -> None:
    own = (FIXTURES / "broken" / "wrong_version.hl7").read_bytes().replace(b"GX-TS-0101", FACILITY.encode())
    await peer.send(own)
    await peer.send((FIXTURES / "broken" / "no_msh.hl7").read_bytes())  # sender unknown
    county = await (await hl7.get("/api/v1/hl7/dead-letters", headers=await hl7.login("county_admin"))).json()
    assert [item["facility"] for item in county["items"]] == [FACILITY]
    province = await (await hl7.get("/api/v1/hl7/dead-letters", headers=await hl7.login("province_admin"))).json()
    assert len(province["items"]) == 2
    letter = county["items"][0]
    # Kept as received except the national id, masked (GB 11643: only its check character is kept).
    assert base64.b64decode(letter["raw_base64"]) == mask_national_ids(own) != own and "张^三" in letter["text"]
    assert "203" in letter["reason"] and letter["peer"].startswith("127.0.0.1:")
    resp = await hl7.get("/api/v1/hl7/dead-letters", headers=await hl7.login("township_doc"))
    assert resp.status == 403

    resp = await hl7.post(f"/api/v1/hl7/dead-letters/{letter['id']}/replay", headers=await hl7.login("county_admin"))
    assert resp.status == 200, await resp.text()
    replayed = await resp.json()
    assert (replayed["replays"], replayed["last_replayed_by"], replayed["resolved_at"]) == (1, "county_admin", None)
    assert replayed["last_outcome"].startswith("AR: HL7 version 2.9 not supported")
    other = province["items"][0]["id"] if province["items"][0]["id"] != letter["id"] else province["items"][1]["id"]
    resp = await hl7.post(f"/api/v1/hl7/dead-letters/{other}/replay", headers=await hl7.login("county_admin"))
    assert resp.status == 404
    async with hl7.hub.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(HL7DeadLetter)) == 2  # no new letter

    # A message dead-lettered by an older gateway (here: recorded directly) goes through on replay.
    letter_id = await record_dead_letter(
        hl7.hub, raw=orm("LATE-1", "HIS-DX-0040"), reason="AR 200: test", peer="10.0.0.1:1", facility=FACILITY
    )
    resp = await hl7.post(f"/api/v1/hl7/dead-letters/{letter_id}/replay", headers=await hl7.login("county_admin"))
    view = await resp.json()
    assert view["last_outcome"] == "AA" and view["resolved_at"] is not None
    request = await request_by_accession(hl7.hub, "HIS-DX-0040")
    assert request is not None and request.state == "ordered"


async def test_a_registry_that_cannot_be_read_is_ae_207_and_the_connection_stays(
    hl7: Any, peer: Peer, monkeypatch: Any
) -> None:
    """The MSH-4 check reads the registry snapshot; when that fails (its reload found the database overloaded)
    the sender gets AE 207, send again later, on the same connection, and nothing is kept."""
    from telenet.services import peers

    async def unreadable(*_args: Any) -> str | None:
        raise RuntimeError("registry reload failed")

    monkeypatch.setattr(peers, "check_facility", unreadable)
    segs = segments(await peer.send(orm("REG-1", "HIS-DX-0100")))
    assert (segs["MSA"][1], segs["MSA"][2], segs["ERR"][3].split("^")[0]) == ("AE", "REG-1", "207")
    assert await request_by_accession(hl7.hub, "HIS-DX-0100") is None
    monkeypatch.undo()
    again = segments(await peer.send(orm("REG-2", "HIS-DX-0100")))
    assert again["MSA"][1:3] == ["AA", "REG-2"], again
    assert await request_by_accession(hl7.hub, "HIS-DX-0100") is not None


@SQLITE_ONLY  # the write queue exists on SQLite only
async def test_the_simulated_his_resends_what_the_write_queue_refused_and_the_order_is_kept_once(
    hl7: Any, monkeypatch: Any, caplog: Any
) -> None:
    """The simulator's township HIS behaves as an interface engine: an AE 207 (the write queue refused the order,
    overload) is sent again, the same MSH-10, after a pause, until it is acknowledged; and its console users try
    a 503 again. Without the resends the order of an overloaded hub is never acknowledged."""
    monkeypatch.setattr(his, "RESEND_AFTER", (0.05,) * 5)
    monkeypatch.setattr(actors, "RETRY_AFTER_CAP", 0.05)
    gate = hl7.gateway.hub.write_gate
    township = Township("NL-C01-K01-T01", "清溪镇卫生院", "C01K01T01", FACILITY, None, "township_doc", "his_t01")
    sender = his.OrderSender("127.0.0.1", hl7.hl7_port, township, rng=random.Random(1))
    order = his.Order("SIMRESEND01", "imaging", "DX", "routine", "SIMP9000001", "张", "三", "M", "19650312",
                      _national_id("0000011"))  # fmt: skip

    async def refuse_until(refused: Any) -> None:
        """Every write is refused (the queue is full) until ``refused()`` has seen one."""
        await gate.acquire()
        gate.max_waiting = 0
        try:
            for _ in range(400):
                if refused():
                    return
                await asyncio.sleep(0.01)
        finally:
            gate.max_waiting = 5_000
            gate.release()

    freed = asyncio.create_task(refuse_until(lambda: sender.resent["AE 207"] >= 1))
    await asyncio.sleep(0)  # the queue is full before the order goes
    sent = []
    original = sender._exchange

    async def exchange(payload: bytes, control_id: str, ack_wait: float) -> str:
        sent.append(control_id)
        return await original(payload, control_id, ack_wait)

    monkeypatch.setattr(sender, "_exchange", exchange)
    assert await sender.send(order) == "AA"
    await freed
    assert len(sent) >= 2 and set(sent) == {sent[0]}, "resent with the same MSH-10"
    # An overload is one line of warning per refusal, not an error with a traceback, and the ACK says so.
    refusals = [r for r in caplog.records if r.name == "gateways.hl7.server" and "overloaded" in r.getMessage()]
    assert refusals and all(r.levelname == "WARNING" and r.exc_info is None for r in refusals), caplog.text
    assert not [r for r in caplog.records if r.name == "gateways.hl7.server" and r.levelname == "ERROR"]
    await sender.close()
    assert sender.resent == {"AE 207": sender.resent["AE 207"]} and sender.resent["AE 207"] >= 1, sender.resent
    async with hl7.hub.reader() as session:
        kept = await session.scalar(
            select(func.count()).select_from(Request).where(Request.accession_number == "SIMRESEND01")
        )
    assert kept == 1

    async with aiohttp.ClientSession() as http:
        api = actors.Api(str(hl7.make_url("")).rstrip("/"), http, {"township_doc": TEST_PASSWORD}, random.Random(2))
        freed = asyncio.create_task(refuse_until(lambda: api.retried["login 503"] >= 1))
        await asyncio.sleep(0)
        assert await api.token("township_doc")
        await freed
    assert api.retried == {"login 503": api.retried["login 503"]} and api.retried["login 503"] >= 1, api.retried
