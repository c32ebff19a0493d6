"""Engine and session factory for SQLite (aiosqlite, WAL) and PostgreSQL (asyncpg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from telenet.store.write_gate import GATE, WriteGate


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, *, schema: str | None = None, echo: bool = False) -> AsyncEngine:
    """Create the async engine; SQLite gets WAL, foreign keys and a busy timeout on every connection.

    ``schema`` (PostgreSQL only) sets the ``search_path`` so that each test can live in its own schema.
    """
    parsed = make_url(url)
    # Bound parameters (patient names, national ids) never go into an error message or a log line.
    kwargs: dict[str, Any] = {"echo": echo, "hide_parameters": True}
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
        # Readers run in parallel on WAL; writers queue on SQLite's lock (busy_timeout), not on the pool.
        kwargs.update(pool_size=10, max_overflow=30, pool_timeout=60)
        engine = create_async_engine(url, **kwargs)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            for pragma in SQLITE_PRAGMAS:
                cursor.execute(pragma)
            cursor.close()

        # pysqlite's own transaction handling defers BEGIN; emit it ourselves so that a write
        # transaction takes the lock at its first statement and conditional updates are atomic.
        @event.listens_for(engine.sync_engine, "connect")
        def _no_pysqlite_begin(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None

        @event.listens_for(engine.sync_engine, "begin")
        def _begin(conn: Any) -> None:
            # Read-only sessions (see read_session_factory) must not queue behind writers.
            options = conn.get_execution_options()
            if options.get(READ_ONLY):
                if not options.get(SINGLE_STATEMENT):
                    conn.exec_driver_sql("BEGIN")
                return
            wait = options.get(LOCK_WAIT_MS)
            if wait is None:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                return
            # A writer with somewhere else to go (the audit journal) waits only this long for the lock.
            conn.exec_driver_sql(f"PRAGMA busy_timeout={int(wait)}")
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            finally:
                conn.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

        return engine
    kwargs["pool_size"] = 10
    kwargs["max_overflow"] = 20
    kwargs["pool_pre_ping"] = True
    if schema:
        kwargs["connect_args"] = {"server_settings": {"search_path": schema}}
    return create_async_engine(url, **kwargs)


def session_factory(engine: AsyncEngine, *, gate: WriteGate | None = None) -> async_sessionmaker[AsyncSession]:
    """Write sessions; with ``gate`` (SQLite) each waits its turn in the process's write queue before it takes
    a connection (see ``telenet.store.write_gate``)."""
    info = {GATE: gate} if gate is not None else None
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False, info=info)


READ_ONLY = "telenet_read_only"
# How long a SQLite writer waits for the one write lock before "database is locked" (read at each use).
BUSY_TIMEOUT_MS = 30_000
# Every SQLite connection's set-up (the engine's, and the audit writer's own).
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    # FULL: a commit that was acknowledged survives a power loss (NORMAL in WAL mode may lose it).
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
)
# Execution option of read sessions that issue one statement: on SQLite no BEGIN (a lone SELECT is its own
# snapshot), one round trip less.
SINGLE_STATEMENT = "telenet_single_statement"
# Execution option: milliseconds a SQLite write transaction waits for the lock before failing "locked".
LOCK_WAIT_MS = "telenet_lock_wait_ms"


def read_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that only read (token checks, event feeds): on SQLite a plain deferred BEGIN, so they read
    their WAL snapshot without waiting for the write lock that every use case takes at its start."""
    return async_sessionmaker(engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False, autoflush=False)


def audit_journal_dir(engine: AsyncEngine) -> Path | None:
    """Where the audit writer journals on a SQLite file (beside the database); None elsewhere."""
    if engine.dialect.name != "sqlite" or not engine.url.database or engine.url.database == ":memory:":
        return None
    database = Path(engine.url.database)
    return database.parent / f"{database.name}.audit"


async def in_driver_thread(conn: Any, fn: Any) -> Any:
    """Run ``fn(sqlite3_connection)`` in aiosqlite's thread in ONE trip (SQLite only): a whole small
    transaction (BEGIN, statements, COMMIT) costs one hand-off to the driver thread and one wake-up of the
    loop, instead of three to four per statement through SQLAlchemy's adapter. ``conn`` is an
    ``AsyncConnection`` that has not begun a transaction; ``fn`` must leave none open."""
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection  # aiosqlite.Connection
    # aiosqlite's own queueing primitive (Connection._execute); pinned in pyproject (aiosqlite 0.2x).
    return await driver._execute(fn, driver._conn)


class RawInsert:
    """A Core ``INSERT`` compiled once for the SQLite dialect, with each column's bind processing, for
    :func:`in_driver_thread` (rows as dicts of column values, as for ``session.execute(insert(t), rows)``)."""

    def __init__(self, table: Any, dialect: Any) -> None:
        columns = [c for c in table.columns if not (c.primary_key and c.autoincrement in (True, "auto"))]
        self.keys = [c.key for c in columns]
        self.processors = [c.type.dialect_impl(dialect).bind_processor(dialect) for c in columns]
        names = ", ".join(f'"{c.name}"' for c in columns)
        self.sql = f'INSERT INTO "{table.name}" ({names}) VALUES ({", ".join("?" for _ in columns)})'

    def parameters(self, rows: Any) -> list[tuple[Any, ...]]:
        pairs = list(zip(self.keys, self.processors, strict=True))
        return [tuple(p(row.get(k)) if p else row.get(k) for k, p in pairs) for row in rows]


# ------------------------------------------------------------------------------------------------------------
# One trip to aiosqlite's thread per statement.
#
# SQLAlchemy's aiosqlite adapter makes three to four hand-offs to the driver's thread for every statement
# (create the cursor, execute, fetch the rows, close the cursor), each a queue put, a thread wake-up and a
# wake-up of the event loop: on this machine that, not SQLite, was most of a use case's time. This cursor does
# the four in one function on the driver's thread and keeps the rows, description, rowcount and lastrowid in
# memory (as the adapter's own buffered cursor does with the rows). Server-side cursors are untouched.


def _run_one(db: Any, operation: str, parameters: Any) -> tuple[Any, int, Any, list[Any] | None]:
    cursor = db.cursor()
    try:
        if parameters is None:
            cursor.execute(operation)
        else:
            cursor.execute(operation, parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


def _run_many(db: Any, operation: str, seq_of_parameters: Any) -> tuple[Any, int, Any, list[Any] | None]:
    cursor = db.cursor()
    try:
        cursor.executemany(operation, seq_of_parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        return description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


def _install_one_trip_cursor() -> None:
    import collections

    from sqlalchemy.dialects.sqlite import aiosqlite as sa_aiosqlite
    from sqlalchemy.util import EMPTY_DICT

    base: Any = sa_aiosqlite.AsyncAdapt_aiosqlite_cursor  # typed Any: the subclass adds to private slots

    class OneTripCursor(base):  # type: ignore[misc]
        def __init__(self, adapt_connection: Any) -> None:
            self._adapt_connection = adapt_connection
            self._connection = adapt_connection._connection
            self._cursor = None
            self._soft_closed_memoized = EMPTY_DICT
            self._rows: collections.deque[Any] = collections.deque()
            self._description: Any = None
            self._rowcount = -1
            self._lastrowid: Any = None

        @property
        def description(self) -> Any:
            return self._description

        @property
        def rowcount(self) -> int:
            return self._rowcount

        @property
        def lastrowid(self) -> Any:
            return self._lastrowid

        @property
        def arraysize(self) -> int:
            return 1

        @arraysize.setter
        def arraysize(self, value: int) -> None:
            pass

        async def _take(self, fn: Any, operation: str, parameters: Any) -> None:
            async with self._adapt_connection._execute_mutex:
                driver = self._connection
                description, rowcount, lastrowid, rows = await driver._execute(fn, driver._conn, operation, parameters)
            self._description, self._rowcount, self._lastrowid = description, rowcount, lastrowid
            self._rows = collections.deque(rows) if rows else collections.deque()

        async def _execute_async(self, operation: Any, parameters: Any) -> Any:
            await self._take(_run_one, operation, parameters)

        async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
            await self._take(_run_many, operation, seq_of_parameters)

        async def _async_soft_close(self) -> None:
            return None

        def close(self) -> None:
            self._rows.clear()

    sa_aiosqlite.AsyncAdapt_aiosqlite_connection._cursor_cls = OneTripCursor


_install_one_trip_cursor()
