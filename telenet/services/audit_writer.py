"""The audit writer of read use cases: the rows of concurrent requests committed together (group commit),
durable before any of those requests answers, without making a read wait for the write lock.

On PostgreSQL (and SQLite in memory) a batch is one multi-row insert in one short transaction. On a SQLite
file a batch first tries the database with a lock wait of a few milliseconds; when a writer holds the lock
the batch is appended to a per-process journal file and fsynced instead (durable: that is the
acknowledgement), and copied into the table as soon as the lock is free. A journal left by a killed
process is copied at the next start (``recover``); a crash between that copy's commit and the journal's
truncation can duplicate rows, never lose them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from telenet.store import db as db_module
from telenet.store.db import LOCK_WAIT_MS, RawInsert, in_driver_thread
from telenet.store.models import AuditEntry

log = logging.getLogger(__name__)

# How long a batch waits for SQLite's write lock before it goes to the journal instead.
JOURNAL_AFTER_MS = 20
_JOURNAL_GLOB = "audit-*.journal"
# The copier's pauses when the journal could not be copied for the lock (doubling up to the maximum).
COPY_RETRY_FIRST_S = 0.5
COPY_RETRY_MAX_S = 10.0


class AuditWriter:
    """Group-commits audit rows; ``write`` returns once the row is durable (table or fsynced journal)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        journal_dir: Path | None = None,
        engine: AsyncEngine | None = None,
    ) -> None:
        self._sessions = sessions
        self._journal_dir = journal_dir
        # A SQLite file: the writer keeps a connection of its own on a thread of its own, and each batch is
        # one hand-off to that thread (BEGIN IMMEDIATE, the multi-row insert, COMMIT). Through the engine's
        # pool a batch cost three (checkout, the transaction, the rollback on return) and the pool's Python.
        self._engine = engine if engine is not None and engine.dialect.name == "sqlite" else None
        database = self._engine.url.database if self._engine is not None else None
        self._path = database if database and database != ":memory:" else None
        self._raw: RawInsert | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        self._pending: list[tuple[list[dict[str, Any]], asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._journal_fd: int | None = None
        self._journaled: list[dict[str, Any]] = []
        self._journal_lock = asyncio.Lock()
        self._copier: asyncio.Task[None] | None = None
        self._copy_lock = asyncio.Lock()
        # How many rows each committed batch held (the group-commit evidence tests and /metrics look at).
        self.batches: list[int] = []

    async def write(self, row: dict[str, Any], *more: dict[str, Any]) -> None:
        """Returns once ``row`` (and ``more``, in the same batch) is durable."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._pending.append(([row, *more], done))
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(), name="audit-writer")
        # A cancelled request (client gone) still gets its row written: the row is in the batch already, and
        # cancelling ``done`` only ends this wait (the batch skips futures that are done).
        await done

    async def drain(self) -> None:
        """Everything written so far is in the audit table (audit searches call this first)."""
        while (self._task is not None and not self._task.done()) or self._pending:
            if self._task is not None:
                await asyncio.shield(self._task)
            else:
                await asyncio.sleep(0)
        if self._journaled:
            await self._copy_journal(wait=True)

    async def _run(self) -> None:
        await asyncio.sleep(0)  # let the requests of this loop turn join the batch
        while self._pending:
            batch, self._pending = self._pending, []
            rows = [row for group in batch for row in group[0]]
            try:
                await self._commit(rows)
            except Exception as exc:  # each waiter learns it; the next batch tries again
                log.exception("could not write %d audit rows", len(rows))
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                self.batches.append(len(rows))
                del self.batches[:-1000]
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def _commit(self, rows: list[dict[str, Any]]) -> None:
        if self._journal_dir is None:
            await self._insert(rows, lock_wait_ms=None)
            return
        if not self._journaled:
            try:
                await self._insert(rows, lock_wait_ms=JOURNAL_AFTER_MS)
                return
            except OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
        await self._journal(rows)

    async def _insert(self, rows: Sequence[dict[str, Any]], *, lock_wait_ms: int | None) -> None:
        if self._engine is not None:
            await self._insert_in_one_trip(rows, lock_wait_ms)
            return
        sessions = self._sessions
        async with sessions() as session:
            if lock_wait_ms is not None:
                conn = await session.connection(execution_options={LOCK_WAIT_MS: lock_wait_ms})
                await conn.execute(insert(AuditEntry), list(rows))
            else:
                await session.execute(insert(AuditEntry), list(rows))
            await session.commit()

    async def _insert_in_one_trip(self, rows: Sequence[dict[str, Any]], lock_wait_ms: int | None) -> None:
        assert self._engine is not None
        if self._raw is None:
            self._raw = RawInsert(AuditEntry.__table__, self._engine.dialect)
        sql, params = self._raw.sql, self._raw.parameters(rows)

        def transaction(db: sqlite3.Connection) -> None:
            if lock_wait_ms is not None:
                db.execute(f"PRAGMA busy_timeout={int(lock_wait_ms)}")
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.executemany(sql, params)
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
            finally:
                if lock_wait_ms is not None:
                    db.execute(f"PRAGMA busy_timeout={db_module.BUSY_TIMEOUT_MS}")

        try:
            if self._path is not None:
                if self._thread is None:
                    self._thread = ThreadPoolExecutor(1, thread_name_prefix="audit-writer")
                await asyncio.get_running_loop().run_in_executor(self._thread, lambda: transaction(self._own_db()))
            else:
                async with self._engine.connect() as conn:
                    await in_driver_thread(conn, transaction)
        except sqlite3.OperationalError as exc:
            # As SQLAlchemy would raise it, so that _commit's journal fallback sees one kind of error.
            raise OperationalError(sql, None, exc) from exc

    def _own_db(self) -> sqlite3.Connection:
        """The writer's own connection (opened on its thread, used only there), set up as the engine's are."""
        if self._db is None:
            assert self._path is not None
            db = sqlite3.connect(self._path, timeout=30, isolation_level=None, check_same_thread=False)
            for pragma in db_module.SQLITE_PRAGMAS:
                db.execute(pragma)
            self._db = db
        return self._db

    def _close_own_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # ---------------------------------------------------------------------------------------------- journal

    async def _journal(self, rows: list[dict[str, Any]]) -> None:
        lines = b"".join(json.dumps(_encode(row), ensure_ascii=False).encode() + b"\n" for row in rows)
        async with self._journal_lock:
            fd = self._open_journal()
            await asyncio.to_thread(_append_durably, fd, lines)
            self._journaled.extend(rows)
        if self._copier is None or self._copier.done():
            self._copier = asyncio.get_running_loop().create_task(self._keep_copying(), name="audit-copier")

    def _open_journal(self) -> int:
        if self._journal_fd is None:
            assert self._journal_dir is not None
            self._journal_dir.mkdir(parents=True, exist_ok=True)
            path = self._journal_dir / f"audit-{os.getpid()}-{secrets.token_hex(4)}.journal"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)  # marks the journal as live: recover() leaves it alone
            _fsync_dir(self._journal_dir)
            self._journal_fd = fd
        return self._journal_fd

    async def _keep_copying(self) -> None:
        """The copier task: copy the journal into the table, and when SQLite's lock stays taken past its busy
        timeout (a long burst of writers), wait and try again; the rows are durable in the journal meanwhile,
        and every later batch goes to the journal until the copy is through."""
        pause = COPY_RETRY_FIRST_S
        while self._journaled:
            try:
                await self._copy_journal(wait=True)
                return
            except OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                log.warning("audit journal copy waited out the write lock; retrying in %.1f s", pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, COPY_RETRY_MAX_S)

    async def _copy_journal(self, *, wait: bool) -> None:
        """Copy the journaled rows into the table (waiting for the lock as any writer does), then truncate;
        one copy at a time (the copier task and ``drain`` would otherwise insert the same rows twice)."""
        async with self._copy_lock:
            await self._copy_journaled()

    async def _copy_journaled(self) -> None:
        while self._journaled:
            count = len(self._journaled)
            await self._insert(self._journaled[:count], lock_wait_ms=None)
            async with self._journal_lock:
                del self._journaled[:count]
                if not self._journaled and self._journal_fd is not None:
                    os.ftruncate(self._journal_fd, 0)
                    os.fsync(self._journal_fd)

    async def recover(self) -> int:
        """Copy the journals of processes that died (unlocked files) into the table; the number of rows."""
        if self._journal_dir is None or not self._journal_dir.exists():
            return 0
        copied = 0
        for path in sorted(self._journal_dir.glob(_JOURNAL_GLOB)):
            fd = os.open(path, os.O_RDWR)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process owns it
                rows = await asyncio.to_thread(_read_journal, fd)
                if rows:
                    await self._insert(rows, lock_wait_ms=None)
                    copied += len(rows)
                path.unlink()
            finally:
                os.close(fd)
        if copied:
            log.info("copied %d audit rows from journals of earlier processes", copied)
        return copied

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.drain()
        if self._thread is not None:
            thread, self._thread = self._thread, None
            await asyncio.get_running_loop().run_in_executor(thread, self._close_own_db)
            thread.shutdown(wait=False)
        if self._journal_fd is not None:
            fd, self._journal_fd = self._journal_fd, None
            os.close(fd)
            if not self._journaled and self._journal_dir is not None:
                for path in self._journal_dir.glob(f"audit-{os.getpid()}-*.journal"):
                    if path.stat().st_size == 0:
                        path.unlink()


def _append_durably(fd: int, data: bytes) -> None:
    os.write(fd, data)
    os.fsync(fd)


def _read_journal(fd: int) -> list[dict[str, Any]]:
    with open(fd, "rb", closefd=False) as fh:
        return [_decode(json.loads(line)) for line in fh.read().splitlines() if line.strip()]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _encode(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    if isinstance(row.get("at"), str):
        row["at"] = datetime.fromisoformat(row["at"])
    return row
