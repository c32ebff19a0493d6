"""SIGKILL while many DICOM associations and HL7 connections write in shared transactions (group commit): after
a restart every acknowledged instance (C-STORE success) and every acknowledged message (ACK AA) is in the
database. On SQLite with ``synchronous=FULL``, and on PostgreSQL when it is configured."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bench.common import HubProcess
from gateways.dicom.node import nodelay
from gateways.hl7.mllp import frame, read_frame
from telenet.store.db import create_engine
from telenet.store.models import DicomInstance, HL7InboundMessage
from tests.conftest import POSTGRES_URL
from tests.dicom_fixtures import TOWNSHIP_AE, instance

ROOT = Path(__file__).resolve().parents[2]
FACILITY = "NL-C01-K01-T01"
CONSENT = "CON|1|IMG^影像检查知情同意^L||||||||W|A||20260302095000"
ASSOCIATIONS = 6
CONNECTIONS = 6
PER_WRITER = 40  # at most; the kill comes first
KILL_AFTER_ACKS = 48


def _orm(control_id: str) -> bytes:
    text_ = (ROOT / "fixtures" / "hl7" / "orm_o01_new_dx.hl7").read_bytes().decode("utf-8")
    text_ = text_.replace("GX-TS-0101", FACILITY).replace("|P|2.4|", "|P|2.5|")
    text_ = text_.replace("ORM20240315000101", control_id).replace("GXTS0101-DX-20240315-0001", control_id)
    text_ = text_.replace("^^^^^R\r", f"^^^^^R\r{CONSENT}\r", 1)
    return text_.rstrip("\r\n").replace("\n", "\r").encode("utf-8")


class Acks:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sops: set[str] = set()
        self.messages: set[str] = set()

    def count(self) -> int:
        with self.lock:
            return len(self.sops) + len(self.messages)

    def enough(self) -> bool:
        """Enough acknowledgements to kill the hub: KILL_AFTER_ACKS in all, and some of each kind."""
        with self.lock:
            return len(self.sops) + len(self.messages) >= KILL_AFTER_ACKS and bool(self.sops and self.messages)


def _dicom_writer(port: int, acks: Acks, stop: threading.Event) -> None:
    ae = AE(ae_title=TOWNSHIP_AE)
    ae.add_requested_context(CTImageStorage)
    # Long enough for a slow first answer (the suite's other workers keep the machine busy), short enough that a
    # writer left waiting for an answer the killed hub never sends gives up soon.
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="TELENET", evt_handlers=[(evt.EVT_CONN_OPEN, nodelay)])
    except Exception:
        return
    if not assoc.is_established:
        return
    study = f"2.25.{uuid.uuid4().int}"
    try:
        for _ in range(PER_WRITER):
            if stop.is_set():
                break
            ds = instance("CT_small.dcm", study_uid=study)
            status = assoc.send_c_store(ds)
            if status is not None and "Status" in status and status.Status == 0x0000:
                with acks.lock:
                    acks.sops.add(str(ds.SOPInstanceUID))
            elif not assoc.is_established:
                break
    except Exception:  # the hub died under us
        return
    finally:
        if assoc.is_established:
            assoc.abort()


async def _hl7_writer(port: int, prefix: str, acks: Acks) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    try:
        for n in range(PER_WRITER):
            control_id = f"{prefix}-{n:03d}"
            writer.write(frame(_orm(control_id)))
            await writer.drain()
            ack = await asyncio.wait_for(read_frame(reader), 30)
            if ack is None:
                return
            if f"MSA|AA|{control_id}".encode() in ack:
                with acks.lock:
                    acks.messages.add(control_id)
    except Exception:  # the hub died under us (reset, incomplete frame, timeout)
        return
    finally:
        writer.close()


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    pending = [pid]
    while pending and len(found) < 100:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            with contextlib.suppress(OSError):
                children = [int(c) for c in (task / "children").read_text().split()]
                found.extend(children)
                pending.extend(children)
    return found


async def _admin(statement: str) -> None:
    assert POSTGRES_URL
    engine = create_async_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


def _engines() -> list[Any]:
    params: list[Any] = [pytest.param("sqlite", id="sqlite")]
    if POSTGRES_URL:
        params.append(pytest.param("postgresql", id="postgresql"))
    return params


@pytest.mark.parametrize("engine", _engines())
async def test_every_acknowledged_write_survives_a_sigkill_mid_group(engine: str) -> None:
    database_url = None
    name = None
    if engine == "postgresql":
        name = "tn_" + uuid.uuid4().hex[:12]
        await _admin(f'CREATE DATABASE "{name}"')
        database_url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    hub = HubProcess(database_url=database_url, protocols=True, env_extra={"TELENET_GROUP_COMMIT_WAIT_MS": "3"})
    try:
        await asyncio.to_thread(hub.prepare)
        await asyncio.to_thread(hub.start)
        acks = Acks()
        stop = threading.Event()
        threads = [
            threading.Thread(target=_dicom_writer, args=(hub.dicom_port, acks, stop), daemon=True)
            for _ in range(ASSOCIATIONS)
        ]
        for thread in threads:
            thread.start()
        run = uuid.uuid4().hex[:6]
        hl7 = [asyncio.create_task(_hl7_writer(hub.hl7_port, f"K{run}{i}", acks)) for i in range(CONNECTIONS)]
        for _ in range(2400):  # 120 s at most
            if acks.enough():
                break
            await asyncio.sleep(0.05)
        assert acks.enough(), f"only {len(acks.sops)} instances and {len(acks.messages)} messages within 120 s"
        assert hub.proc is not None
        helpers = _descendants(hub.proc.pid)  # the HL7 process pool: it dies with the machine, too
        hub.proc.send_signal(signal.SIGKILL)
        hub.proc.wait(timeout=10)
        for pid in helpers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*hl7), 60)
        for thread in threads:
            await asyncio.to_thread(thread.join, 30)
        with acks.lock:
            sops, messages = set(acks.sops), set(acks.messages)
        assert sops and messages, f"both kinds must be acknowledged before the kill: {len(sops)}, {len(messages)}"

        await asyncio.to_thread(hub.start)  # the restart recovers the database (WAL, journals)
        db = create_engine(hub.env["TELENET_DATABASE_URL"])
        try:
            async with db.connect() as conn:
                stored = set(
                    (
                        await conn.execute(
                            select(DicomInstance.sop_instance_uid).where(DicomInstance.sop_instance_uid.in_(sops))
                        )
                    ).scalars()
                )
                logged = set(
                    (
                        await conn.execute(
                            select(HL7InboundMessage.message_control_id).where(
                                HL7InboundMessage.message_control_id.in_(messages)
                            )
                        )
                    ).scalars()
                )
        finally:
            await db.dispose()
        assert sops - stored == set(), f"{len(sops - stored)} of {len(sops)} acknowledged instances were lost"
        assert messages - logged == set(), f"{len(messages - logged)} of {len(messages)} acknowledged messages lost"
    finally:
        if hub.proc is not None and hub.proc.poll() is None:
            hub.stop()
        if name is not None:
            await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
