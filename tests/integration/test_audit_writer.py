"""The audit writer on a SQLite file: its own connection is set up as the engine's are (WAL, synchronous=FULL:
an acknowledged read's row survives a power loss), and a request that goes away while its row waits for the
batch still gets the row written."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from telenet.services.audit_writer import AuditWriter
from telenet.store.db import create_engine, session_factory
from telenet.store.models import AuditEntry, Base
from tests.integration.test_audit_journal_copy import _row


async def _writer(tmp_path: Path) -> tuple[Any, AuditWriter]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    return engine, AuditWriter(session_factory(engine), journal_dir=tmp_path / "journal", engine=engine)


async def test_the_writers_own_connection_commits_durably(tmp_path: Path) -> None:
    engine, writer = await _writer(tmp_path)
    try:
        await writer.write(_row(1))
        assert writer._db is not None, "a SQLite file's batches go through the writer's own connection"
        own = writer._db
        pragmas = await asyncio.get_running_loop().run_in_executor(
            writer._thread,
            lambda: [own.execute(f"PRAGMA {p}").fetchone()[0] for p in ("synchronous", "journal_mode")],
        )
        assert pragmas == [2, "wal"]  # 2: FULL
    finally:
        await writer.close()
        await engine.dispose()
    assert writer._db is None, "closed with the writer"


async def test_a_request_gone_while_its_row_waits_still_gets_it_written(tmp_path: Path) -> None:
    engine, writer = await _writer(tmp_path)
    try:
        gone = asyncio.create_task(writer.write(_row(1)))
        await asyncio.sleep(0)  # the row is in the batch
        gone.cancel()  # the client went away
        await writer.write(_row(2))
        await writer.drain()
        assert gone.cancelled()
        async with engine.connect() as conn:
            ids = (await conn.execute(select(AuditEntry.object_id).order_by(AuditEntry.id))).scalars().all()
            total = (await conn.execute(select(func.count()).select_from(AuditEntry))).scalar_one()
        assert (ids, total) == (["1", "2"], 2)
    finally:
        await writer.close()
        await engine.dispose()
