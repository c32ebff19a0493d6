"""The audit journal's copier outlasts a long burst of writers: when SQLite's write lock stays taken past the
busy timeout while journaled rows wait to be copied into the table, the copier waits and tries again (it
used to end with the error), and the rows reach the table once the lock is free."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import create_async_engine

from telenet.services import audit_writer
from telenet.services.audit_writer import AuditWriter
from telenet.store import db
from telenet.store.db import session_factory
from telenet.store.models import AuditEntry, Base


def _row(n: int) -> dict[str, Any]:
    return {
        "at": datetime.now(UTC),
        "actor_id": None,
        "actor": "tester",
        "actor_institution_path": "/X/",
        "action": "test.read",
        "object_type": "thing",
        "object_id": str(n),
        "object_path": "/X/",
        "remote_addr": "127.0.0.1",
        "outcome": "ok",
        "detail": None,
    }


async def _rows_in_table(engine: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(AuditEntry))).scalar_one())


async def test_the_copier_retries_when_the_lock_outlasts_the_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_writer, "COPY_RETRY_FIRST_S", 0.05)
    monkeypatch.setattr(db, "BUSY_TIMEOUT_MS", 100)
    path = tmp_path / "audit.db"
    # A busy timeout of 0.1 s instead of the hub's 30 s, so that the copy gives up on the lock quickly.
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}", connect_args={"timeout": 0.1})
    async with engine.begin() as conn:
        await conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        await conn.run_sync(Base.metadata.create_all)
    writer = AuditWriter(session_factory(engine), journal_dir=tmp_path / "journal", engine=engine)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock for longer than the busy timeout
        await asyncio.wait_for(writer.write(_row(1), _row(2)), 10)  # durable: in the journal, fsynced
        journal = "".join(p.read_text(encoding="utf-8") for p in (tmp_path / "journal").glob("audit-*.journal"))
        assert journal.count('"action": "test.read"') == 2
        await asyncio.sleep(0.5)  # the copier tried (and waited out the lock) several times meanwhile
        assert writer._copier is not None and not writer._copier.done(), "the copier gave up"
        holder.execute("ROLLBACK")
        for _ in range(100):
            if await _rows_in_table(engine) == 2:
                break
            await asyncio.sleep(0.1)
        assert await _rows_in_table(engine) == 2, "the journaled rows never reached the table"
    finally:
        holder.close()
        await writer.close()
        await engine.dispose()
