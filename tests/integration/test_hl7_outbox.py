"""Results out: the outbox written with the report, and the sender against a real MLLP listener as the HIS
(python-hl7's server): order per patient, AA/AE/AR/timeouts, one alert per outage, and a restart."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import hl7
import hl7.mllp
import pytest
from sqlalchemy import select, update

from gateways.hl7.codec import build_oru
from gateways.hl7.mapping import report_result
from gateways.hl7.sender import ResultSender
from gateways.hl7.server import WorkerPool
from telenet.app import build_app
from telenet.config import Settings
from telenet.services import auth, hl7_inbound, outbox, queue, reports, requests, studies
from telenet.services.outbox import control_id
from telenet.store.models import Event, HL7DeadLetter, HL7OutboxItem, Institution
from tests.conftest import DEFAULT_NOW
from tests.factories import order

SQLITE_ONLY = pytest.mark.parametrize("database", ["sqlite"], indirect=True)
TOWNSHIP = "NL-C01-K01-T01"
FINAL = {"findings": "双肺纹理清晰。\n心影不大。", "impression": "胸部正位片未见明显异常。", "final": True}


class HIS:
    """python-hl7's asyncio MLLP server as the township HIS: keeps every ORU, answers as scripted
    (``AA`` by default; ``AE``, ``AR``, ``wrong-id`` (MSA-2 of another message) or ``silent``)."""

    def __init__(self) -> None:
        self.received: list[hl7.Message] = []
        self.script: list[str] = []
        self.server: asyncio.Server | None = None

    async def start(self, port: int = 0) -> int:
        self.server = await hl7.mllp.start_hl7_server(self._client, "127.0.0.1", port, encoding="utf-8")
        bound: int = self.server.sockets[0].getsockname()[1]
        return bound

    async def _client(self, reader: Any, writer: Any) -> None:
        try:
            while True:
                message = await reader.readmessage()
                self.received.append(message)
                mode = self.script.pop(0) if self.script else "AA"
                if mode == "silent":
                    continue
                ack = message.create_ack("AA" if mode == "wrong-id" else mode, message_id=f"H{len(self.received)}")
                if mode == "wrong-id":
                    ack.segment("MSA")[2] = "TNR-SOMETHING-ELSE"
                writer.writemessage(ack)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def control_ids(self) -> list[str]:
        return [str(m.segment("MSH")[10]) for m in self.received]

    def accessions(self) -> list[tuple[str, str]]:
        return [(str(m.segment("OBR")[3]), str(m.segment("OBR")[25])) for m in self.received]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def point_township_at(hub: Any, port: int) -> None:
    async with hub.sessions() as session:
        await session.execute(update(Institution).where(Institution.code == TOWNSHIP).values(hl7_port=port))
        await session.commit()


async def final_report(hub: Any, patient_id: str, serial: int, **report: Any) -> dict[str, Any]:
    """A DX read ordered by the township, queued, claimed and signed by the county reader."""
    doc = await auth.actor_for_username(hub, "township_doc")
    view = await requests.submit(hub, doc, order(patient_id=patient_id, serial=serial, name="张三"))
    await requests.data_complete(hub, await auth.actor_for_username(hub, "his_t01"), view["id"], "api")
    reader = await auth.actor_for_username(hub, "county_reader")
    await queue.claim(hub, reader, view["id"])
    return await reports.report(hub, reader, view["id"], {**FINAL, **report})


async def outbox_rows(hub: Any) -> list[HL7OutboxItem]:
    async with hub.sessions() as session:
        return list((await session.execute(select(HL7OutboxItem).order_by(HL7OutboxItem.id))).scalars().all())


async def alerts(hub: Any) -> list[str]:
    async with hub.sessions() as session:
        rows = await session.execute(select(Event.name).where(Event.name.like("hl7.%")).order_by(Event.id))
        return list(rows.scalars().all())


def sender_settings(settings: Settings, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "hl7_ack_timeout_seconds": 2.0,
        "hl7_send_backoff_seconds": 10.0,
        "hl7_send_backoff_max_seconds": 60.0,
        "hl7_send_max_attempts": 5,
    }
    return settings.replace(**(values | overrides))


@pytest.fixture
async def pool() -> AsyncIterator[WorkerPool]:
    workers = WorkerPool(1)
    await workers.start()
    yield workers
    await workers.stop()


@pytest.fixture
async def his(demo_hub: Any) -> AsyncIterator[HIS]:
    peer = HIS()
    await point_township_at(demo_hub, await peer.start())
    yield peer
    await peer.stop()


def make_sender(hub: Any, settings: Settings, pool: WorkerPool, **overrides: Any) -> ResultSender:
    return ResultSender(hub, sender_settings(settings, **overrides), pool.run)


# ------------------------------------------------------------------------------------------------ outbox


async def test_final_reports_and_addenda_are_queued_with_what_the_oru_needs(demo_hub: Any, his: HIS) -> None:
    view = await final_report(demo_hub, "P1", 1, critical=True, critical_items=["气胸"])
    reader = await auth.actor_for_username(demo_hub, "county_reader")
    await reports.addendum(demo_hub, reader, view["id"], {"text": "补充：左侧肋骨骨折。"})
    final, addendum = await outbox_rows(demo_hub)
    assert (final.status, final.result_status, addendum.result_status) == ("pending", "F", "C")
    assert final.message_control_id == control_id(final.id) and final.receiving_facility == TOWNSHIP
    assert (final.destination_host, final.destination_port) == ("127.0.0.1", his.server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    payload = addendum.payload
    assert payload["accession_number"] == view["accession_number"]
    assert payload["patient"] | {"birth_date": None} == {
        "id": "P1",
        "name": "张三",
        "family": "张三",
        "given": "",
        "sex": "M",
        "birth_date": None,
    }
    assert payload["findings"] == FINAL["findings"] and payload["addendum_text"] == "补充：左侧肋骨骨折。"
    assert payload["critical"] is True and payload["critical_items"] == ["气胸"]
    assert payload["signer"] == {"id": "county_reader", "name": "陈立明"}
    assert payload["procedure"] == {"code": "DX", "text": "DX CHEST"}

    async with demo_hub.sessions() as session:  # an institution without an HL7 destination gets nothing
        await session.execute(update(Institution).where(Institution.code == TOWNSHIP).values(hl7_host=None))
        await session.commit()
    await final_report(demo_hub, "P2", 2)
    assert len(await outbox_rows(demo_hub)) == 2


async def test_the_oru_names_the_technician_the_images_name(demo_hub: Any) -> None:
    """OBR-34: the OperatorsName of the request's study, beside OBR-32 (signer)."""
    doc = await auth.actor_for_username(demo_hub, "township_doc")
    view = await requests.submit(demo_hub, doc, order(modality="CT", patient_id="P9", serial=9, name="张三"))
    modality = await studies.ae_actor(demo_hub, "C01K01T01")
    assert modality is not None
    record = studies.InstanceRecord(
        sop_instance_uid="2.25.901",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        study_instance_uid="2.25.900",
        series_instance_uid="2.25.902",
        path="/nonexistent/for/this/test.dcm",
        size_bytes=1,
        accession_number=view["accession_number"],
        operators_name="孙^技师\\李^技师",
        modality="CT",
    )
    await studies.store_instance(demo_hub, modality, record)
    await requests.data_complete(demo_hub, await auth.actor_for_username(demo_hub, "his_t01"), view["id"], "api")
    reader = await auth.actor_for_username(demo_hub, "county_reader")
    await queue.claim(demo_hub, reader, view["id"])
    await reports.report(demo_hub, reader, view["id"], FINAL)
    [row] = await outbox_rows(demo_hub)
    assert row.payload["technician"] == {"name": "孙^技师"}, "the first operator"
    oru = build_oru(report_result(row.payload), message_control_id="X", receiving_facility=TOWNSHIP, now=DEFAULT_NOW)
    obr = hl7.parse(oru.decode()).segment("OBR")
    assert (str(obr[32]), str(obr[34])) == ("county_reader&陈立明", "&孙&技师")


# ------------------------------------------------------------------------------------------------ sender


async def test_delivery_in_order_per_patient(demo_hub: Any, his: HIS, pool: WorkerPool, settings: Settings) -> None:
    a = await final_report(demo_hub, "P1", 1)
    c = await final_report(demo_hub, "P2", 2)
    b = await final_report(demo_hub, "P1", 3)
    reader = await auth.actor_for_username(demo_hub, "county_reader")
    await reports.addendum(demo_hub, reader, a["id"], {"text": "更正：右肺门影稍浓。"})
    sender = make_sender(demo_hub, settings, pool)
    rounds = [await sender.run_once() for _ in range(4)]
    assert rounds == [2, 1, 1, 0]  # one message per patient per round: the oldest pending one
    acc = {a["accession_number"]: "A", b["accession_number"]: "B", c["accession_number"]: "C"}
    assert [(acc[x], status) for x, status in his.accessions()] == [("A", "F"), ("C", "F"), ("B", "F"), ("A", "C")]
    rows = await outbox_rows(demo_hub)
    assert [r.status for r in rows] == ["delivered"] * 4
    assert his.control_ids() == [control_id(rows[i].id) for i in (0, 1, 2, 3)]
    oru = his.received[0]
    assert str(oru.segment("PID")[5]) == "张三" and str(oru.segment("MSH")[6]) == TOWNSHIP
    assert [str(o[5]) for o in oru.segments("OBX")][:2] == ["双肺纹理清晰。", "心影不大。"]
    admin = await auth.actor_for_username(demo_hub, "county_admin")
    assert (await outbox.backlog(demo_hub, admin))["items"] == []
    delivered = await outbox.backlog(demo_hub, admin, status="delivered")
    assert [i["accession_number"] for i in delivered["items"]][:2] == [a["accession_number"], c["accession_number"]]


async def test_two_senders_never_claim_the_same_result(demo_hub: Any, his: HIS, clock: Any) -> None:
    for serial in range(4):
        await final_report(demo_hub, f"P{serial % 3}", serial)  # P0 has two: only its oldest can be claimed
    claims = await asyncio.gather(
        *(outbox.claim_due(demo_hub, owner=f"sender-{n}", now=clock.now(), lease_seconds=60) for n in range(4))
    )
    ids = [claim.id for batch in claims for claim in batch]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 3
    rows = {r.id: r for r in await outbox_rows(demo_hub)}
    assert {rows[i].lease_owner for i in ids} <= {f"sender-{n}" for n in range(4)}
    assert max(rows) not in ids  # the second result of P0 waits behind its first


@SQLITE_ONLY  # retry logic: claims on both engines are covered by the other tests
async def test_ae_and_a_foreign_msa2_are_retried_with_backoff_holding_the_patients_queue(
    demo_hub: Any, his: HIS, pool: WorkerPool, settings: Settings, clock: Any
) -> None:
    first = await final_report(demo_hub, "P1", 1)
    second = await final_report(demo_hub, "P1", 2)
    his.script = ["AE", "wrong-id", "AA", "AA"]
    sender = make_sender(demo_hub, settings, pool)
    assert await sender.run_once() == 1
    row = (await outbox_rows(demo_hub))[0]
    assert (row.status, row.attempts) == ("pending", 1) and "AE" in (row.last_error or "")
    assert row.next_attempt_at == clock.now() + timedelta(seconds=10)
    assert await sender.run_once() == 0  # backing off, and the second result waits behind the first
    clock.advance(seconds=11)
    assert await sender.run_once() == 1
    row = (await outbox_rows(demo_hub))[0]
    assert row.status == "pending" and "not for" in (row.last_error or "")
    assert row.next_attempt_at == clock.now() + timedelta(seconds=20)  # doubled
    clock.advance(seconds=21)
    assert [await sender.run_once() for _ in range(3)] == [1, 1, 0]
    assert [r.status for r in await outbox_rows(demo_hub)] == ["delivered", "delivered"]
    accessions = [x for x, _ in his.accessions()]
    assert accessions == [first["accession_number"]] * 3 + [second["accession_number"]]
    assert len(set(his.control_ids()[:3])) == 1  # the same MSH-10 on every attempt


async def test_ar_dead_letters_and_replay_sends_it_again(
    demo_hub: Any, his: HIS, pool: WorkerPool, settings: Settings
) -> None:
    refused = await final_report(demo_hub, "P1", 1)
    later = await final_report(demo_hub, "P1", 2)
    his.script = ["AR"]
    sender = make_sender(demo_hub, settings, pool)
    assert [await sender.run_once() for _ in range(3)] == [1, 1, 0]
    rows = await outbox_rows(demo_hub)
    assert [r.status for r in rows] == ["dead", "delivered"]  # a refused result does not block the next
    async with demo_hub.sessions() as session:
        letter = (await session.execute(select(HL7DeadLetter))).scalar_one()
    assert (letter.direction, letter.outbox_id) == ("outbound", rows[0].id)
    assert refused["accession_number"].encode() in letter.raw and "refused" in letter.reason
    admin = await auth.actor_for_username(demo_hub, "county_admin")
    listed = await hl7_inbound.list_dead_letters(demo_hub, admin, direction="outbound")
    assert [item["id"] for item in listed["items"]] == [letter.id]

    view = await hl7_inbound.replay_dead_letter(demo_hub, admin, letter.id, None)
    assert view["resolved_at"] is not None and view["replays"] == 1
    assert [await sender.run_once() for _ in range(2)] == [1, 0]
    assert [r.status for r in await outbox_rows(demo_hub)] == ["delivered", "delivered"]
    assert [x for x, _ in his.accessions()] == [
        refused["accession_number"],
        later["accession_number"],
        refused["accession_number"],
    ]


async def test_one_alert_per_outage_and_attempt_limit(
    demo_hub: Any, his: HIS, pool: WorkerPool, settings: Settings, clock: Any
) -> None:
    await final_report(demo_hub, "P1", 1)
    await final_report(demo_hub, "P2", 2)
    port = his.server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    await his.stop()
    sender = make_sender(demo_hub, settings, pool, hl7_send_max_attempts=3, hl7_ack_timeout_seconds=0.5)
    assert await sender.run_once() == 2
    first, second = await outbox_rows(demo_hub)
    assert (first.attempts, second.attempts) == (1, 0)  # the second was not tried: the destination was down
    assert "cannot connect" in (first.last_error or "") and second.next_attempt_at is not None
    clock.advance(seconds=11)
    assert await sender.run_once() == 2
    assert await alerts(demo_hub) == ["hl7.destination_down"]

    his.script = ["silent"]  # up, but never answers: still the same outage
    await his.start(port)
    clock.advance(seconds=30)
    assert await sender.run_once() == 2
    assert await alerts(demo_hub) == ["hl7.destination_down"]
    first, second = await outbox_rows(demo_hub)
    assert (first.status, first.attempts) == ("dead", 3) and "gave up after 3 attempts" in (first.last_error or "")
    assert "no ACK within 0.5 s" in (first.last_error or "")

    clock.advance(seconds=60)
    assert await sender.run_once() == 1
    assert [r.status for r in await outbox_rows(demo_hub)] == ["dead", "delivered"]
    assert await alerts(demo_hub) == ["hl7.destination_down", "hl7.destination_recovered"]
    admin = await auth.actor_for_username(demo_hub, "county_admin")
    assert (await outbox.backlog(demo_hub, admin, status="dead"))["items"][0]["attempts"] == 3


class RunningClock:
    """Real time, starting at the test's fixed moment (so the apps' backoff elapses by itself)."""

    def __init__(self, start: datetime = DEFAULT_NOW) -> None:
        self.start, self.t0 = start, time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self.t0)


async def test_outage_across_a_restart_delivers_each_result_once_in_order(
    aiohttp_client: Any, demo_hub: Any, settings: Settings, database: Any
) -> None:
    port = free_port()
    await point_township_at(demo_hub, port)  # nobody listens there yet: the HIS is down
    app_settings = settings.replace(
        hl7_enabled=True,
        hl7_port=0,
        hl7_workers=1,
        hl7_ack_timeout_seconds=2.0,
        hl7_send_backoff_seconds=0.05,
        hl7_send_backoff_max_seconds=0.2,
    )
    first_app = await aiohttp_client(build_app(app_settings, engine=database.engine, clock=RunningClock()))
    accessions = [(await final_report(demo_hub, "P1", 1))["accession_number"]]
    for _ in range(200):  # the first hub tries, fails and raises the alert
        if await alerts(demo_hub):
            break
        await asyncio.sleep(0.05)
    await first_app.close()  # the sender stops while the HIS is still down
    for serial in (2, 3):
        accessions.append((await final_report(demo_hub, "P1", serial))["accession_number"])

    await aiohttp_client(build_app(app_settings, engine=database.engine, clock=RunningClock()))
    his = HIS()
    await his.start(port)
    try:
        for _ in range(400):
            if [r.status for r in await outbox_rows(demo_hub)] == ["delivered"] * 3:
                break
            await asyncio.sleep(0.05)
        assert [x for x, _ in his.accessions()] == accessions  # each exactly once, in order
        assert await alerts(demo_hub) == ["hl7.destination_down", "hl7.destination_recovered"]
    finally:
        await his.stop()
