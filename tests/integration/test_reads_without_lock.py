"""Reads never wait for writers: with a write transaction held open (SQLite's write lock, a PostgreSQL row
lock), a worklist page, a request page, /healthz, a DICOM C-FIND and a live subscription all answer, and the
audit rows of those
reads are durable before they answer (journaled on SQLite while the lock is held, in the table afterwards)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]
from sqlalchemy import func, select, update

from telenet.config import Settings
from telenet.store.db import audit_journal_dir
from telenet.store.models import AuditEntry, Request
from tests.dicom_fixtures import TOWNSHIP_AE, dicom_settings
from tests.integration.test_requests_api import queued_imaging

# How long an answer may take before we call it blocked (generous: a loaded CI machine); the lock is held
# until the test releases it, and a read that queued for it would wait out busy_timeout (30 s).
ANSWER_WITHIN_S = 25.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return dicom_settings(tmp_path)


def _c_find(port: int) -> list[int]:
    ae = AE(ae_title=TOWNSHIP_AE)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", port, ae_title="TELENET")
    assert assoc.is_established, "the association was refused"
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    query.PatientID = ""
    statuses = [
        int(status.Status)
        for status, _ in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
        if status is not None and "Status" in status
    ]
    assoc.release()
    return statuses


async def _audit_count(client: Any, action: str) -> int:
    async with client.hub.reader() as session:
        return int((await session.execute(select(func.count()).where(AuditEntry.action == action))).scalar_one())


async def test_reads_answer_while_a_writer_holds_the_lock(client: Any, node: Any, database: Any) -> None:
    view = await queued_imaging(client, patient_id="L1")
    reader = await client.login("county_reader")
    requester = await client.login("township_doc")
    actions = ("worklist.read", "request.read", "dicom.find", "events.subscribe")
    before = {a: await _audit_count(client, a) for a in actions}

    async with database.engine.connect() as writer:
        # SQLite: BEGIN IMMEDIATE, the database's one write lock; PostgreSQL: a row lock on the request read.
        await writer.execute(update(Request).where(Request.id == view["id"]).values(clinical_question="锁住"))

        async def answers() -> tuple[Any, ...]:
            worklist = await client.get("/api/v1/centers/NL-C01-K01-IMG/worklist", headers=reader)
            page = await client.get(f"/api/v1/requests/{view['id']}", headers=requester)
            health = await client.get("/healthz")
            found = await asyncio.to_thread(_c_find, node.port)
            # A live subscription (and every later re-check of its topics) is a read of the worklist's events.
            async with client.ws_connect("/api/v1/ws", headers=reader) as ws:
                await ws.send_json({"action": "subscribe", "topics": ["worklist:NL-C01-K01-IMG"]})
                subscribed = await ws.receive_json()
            assert subscribed == {"type": "subscribed", "topics": ["worklist:NL-C01-K01-IMG"]}, subscribed
            return worklist.status, (await worklist.json()), page.status, (await page.json()), health.status, found

        w_status, w_body, p_status, p_body, h_status, found = await asyncio.wait_for(answers(), ANSWER_WITHIN_S)
        assert w_status == 200 and [i["request_id"] for i in w_body["items"]] == [view["id"]]
        assert p_status == 200 and p_body["clinical_question"] != "锁住", "the read sees the committed state"
        assert h_status == 200
        assert found and found[-1] == 0x0000, f"C-FIND ended with {found}"
        journal = audit_journal_dir(database.engine)
        if journal is not None:
            # The audit rows could not reach the table under the lock: they are fsynced in the journal.
            text = "".join(p.read_text(encoding="utf-8") for p in journal.glob("audit-*.journal"))
            for action in actions:
                assert f'"action": "{action}"' in text, f"{action} is not in the audit journal"
        await writer.rollback()

    assert client.hub.audit_writer is not None
    await client.hub.audit_writer.drain()
    for action, count in before.items():
        assert await _audit_count(client, action) == count + 1, f"{action} was not audited exactly once"
