"""Shared fixtures: a fresh database per test on SQLite and (when configured) PostgreSQL, the demo network,
a real aiohttp server, and logins.

What makes them cheap (the whole suite has a time budget):
- a fresh database is a copy, not a build: each worker builds, once per engine, a template with the tables of
  the models (and one more holding the demo network), then copies it per test: a file copy on SQLite; on
  PostgreSQL a schema of the worker's pool, emptied and (for the demo network) refilled from the template
  schema, sequences included, so that a test sees exactly what create_all and load_network would have made;
- the temporary files (SQLite databases, DICOM storage, hub processes' folders) live on tmpfs when there is
  one, so that ``synchronous=FULL`` commits wait for no disk (``TELENET_TEST_TMPDIR`` chooses the folder);
- the test accounts' password is hashed once per process, at a lower scrypt cost (the cost is stored in the
  hash, so logins verify it as they would any other; production hashes keep their cost).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import os
import shutil
import sys
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from telenet.config import Settings
from telenet.domain.sla import FixedClock
from telenet.store.db import create_engine
from telenet.store.models import Base

ROOT = Path(__file__).resolve().parent.parent
DEMO_NETWORK = ROOT / "fixtures" / "network-demo.json"
POSTGRES_URL = os.environ.get("TELENET_TEST_POSTGRES_URL")
REQUIRE_PEERS = os.environ.get("TELENET_REQUIRE_PEERS") == "1"
TEST_PASSWORD = "demo-password-1"
# 2026-03-02 is a Monday; 10:00 in Asia/Shanghai, inside every center's opening hours.
DEFAULT_NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
TEST_SECRET = "test-secret-not-for-production"
# scrypt's n for the test accounts' password (production: 2**14); a login verifies with the n of the hash.
TEST_SCRYPT_N = 2**10


def _use_tmpfs() -> None:
    """Temporary files on tmpfs (the SQLite files' fsyncs cost nothing there); TMPDIR beside pytest's folders so
    that a file the product writes to a temporary file and renames into storage stays on one filesystem."""
    if "PYTEST_DEBUG_TEMPROOT" in os.environ:
        return
    chosen = os.environ.get("TELENET_TEST_TMPDIR")
    if chosen is None:
        shm = Path("/dev/shm")
        if not (shm.is_dir() and os.access(shm, os.W_OK)):
            return
        chosen = str(shm / f"telenet-tests-{os.getuid()}")
    root = Path(chosen)
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    os.environ["PYTEST_DEBUG_TEMPROOT"] = str(root)
    os.environ["TMPDIR"] = str(root / "tmp")
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again


_use_tmpfs()


@functools.cache
def password_hash_for_tests() -> str:
    """TEST_PASSWORD as stored for the test accounts (hashed once per process)."""
    from telenet.services.auth import hash_password

    return hash_password(TEST_PASSWORD, n=TEST_SCRYPT_N)


def needs_postgres(what: str) -> pytest.MarkDecorator:
    """Skip a PostgreSQL-only test where no PostgreSQL is configured, except where peers are required (CI):
    there the test runs, and fails loudly without TELENET_TEST_POSTGRES_URL."""
    return pytest.mark.skipif(not POSTGRES_URL and not REQUIRE_PEERS, reason=f"{what} need TELENET_TEST_POSTGRES_URL")


def engine_params() -> list[Any]:
    params = [pytest.param("sqlite", id="sqlite")]
    if POSTGRES_URL:
        params.append(pytest.param("postgres", id="postgres"))
    return params


def missing_peer(message: str) -> NoReturn:
    """A real peer the test needs is missing: skip with the reason, or fail where peers are required (CI)."""
    if REQUIRE_PEERS:
        pytest.fail(message)
    pytest.skip(message)


def require_tool(name: str) -> str:
    """The path of a peer tool; skip with a reason when missing, fail when peers are required (CI)."""
    path = shutil.which(name)
    if path is None:
        missing_peer(f"{name} is not installed (apt-get install dcmtk orthanc); TELENET_REQUIRE_PEERS=1 fails here")
    return path


class Database:
    """A database of one test: its URL, engine, and (PostgreSQL) the schema it lives in. ``demo_loaded``: it
    already holds the demo network with every account's password TEST_PASSWORD (see ``demo_hub``)."""

    def __init__(self, kind: str, url: str, engine: AsyncEngine, schema: str | None, demo_loaded: bool = False) -> None:
        self.kind = kind
        self.url = url
        self.engine = engine
        self.schema = schema
        self.demo_loaded = demo_loaded
        self.pooled = False  # a schema of this process's pool: emptied for the next test, not dropped


def template_settings(var_dir: Path) -> Settings:
    return Settings(var_dir=str(var_dir), secret=TEST_SECRET, dicom_enabled=False, hl7_enabled=False)


async def load_demo(engine: AsyncEngine, var_dir: Path) -> None:
    """What ``demo_hub`` puts in a fresh database: the demo network at DEFAULT_NOW, every password TEST_PASSWORD."""
    from sqlalchemy import update

    from telenet.app import make_hub
    from telenet.services.network import load_network
    from telenet.store.models import User

    hub = make_hub(template_settings(var_dir), engine, FixedClock(DEFAULT_NOW))
    await load_network(hub, json.loads(DEMO_NETWORK.read_text(encoding="utf-8")))
    async with hub.sessions() as session:
        await session.execute(update(User).values(password_hash=password_hash_for_tests()))
        await session.commit()


class _Templates:
    """This process's templates (built on first use), and its pool of PostgreSQL schemas."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="telenet-templates-"))
        self.sqlite: dict[bool, Path] = {}
        self.pg_demo: str | None = None  # the schema that holds the demo network
        self.pg_shape: str | None = None  # the catalog fingerprint of a schema made by create_all
        self.pg_reset: dict[bool, str] = {}  # the scripts that empty a pooled schema (and refill it)
        self.pg_pool: list[str] = []
        self.pg_owned: list[str] = []
        self.pg_superuser: bool | None = None
        self.pg_relations: list[str] = []  # the names of the tables, indexes and sequences create_all makes


_templates = _Templates()


async def _sqlite_template(demo: bool) -> Path:
    path = _templates.sqlite.get(demo)
    if path is None:
        path = _templates.dir / f"{'demo' if demo else 'empty'}.db"
        engine = create_engine(f"sqlite+aiosqlite:///{path}")
        try:
            async with engine.begin() as conn:
                await conn.run_sync(Base.metadata.create_all)
            if demo:
                await load_demo(engine, _templates.dir / "var")
        finally:
            await engine.dispose()  # the last connection checkpoints the WAL into the file
        _assert_checkpointed(path)
        _templates.sqlite[demo] = path
    return path


def _assert_checkpointed(path: Path) -> None:
    wal = Path(f"{path}-wal")
    assert not wal.exists() or wal.stat().st_size == 0, "the template's WAL was not checkpointed"


def _copy_file(source: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(source, folder / "telenet.db"))


# The catalog entries of a schema's relations (looked up by name: the catalogs' indexes, no scan): a test that
# changed them (DDL) leaves a schema that the pool must not reuse.
_SHAPE_SQL = """
WITH rels AS (SELECT name, to_regclass(format('%I.%I', $1::text, name)) AS oid FROM unnest($2::text[]) AS name)
SELECT md5(string_agg(line, ',' ORDER BY line)) FROM (
  SELECT 'r:' || r.name || ':' || coalesce(c.relkind::text, '-') AS line
  FROM rels r LEFT JOIN pg_class c ON c.oid = r.oid
  UNION ALL
  SELECT 'a:' || r.name || ':' || a.attnum || ':' || a.attname || ':' || a.atttypid || ':' || a.attnotnull
  FROM rels r JOIN pg_attribute a ON a.attrelid = r.oid WHERE a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT 't:' || r.name || ':' || t.tgname || ':' || t.tgenabled::text
  FROM rels r JOIN pg_trigger t ON t.tgrelid = r.oid WHERE NOT t.tgisinternal
  UNION ALL
  SELECT 'c:' || r.name || ':' || k.conname || ':' || k.contype::text
  FROM rels r JOIN pg_constraint k ON k.conrelid = r.oid
  UNION ALL
  SELECT 'f:' || (to_regprocedure(format('%I.audit_append_only()', $1::text)) IS NOT NULL)::text
) lines
"""


async def _pg_shape(engine: AsyncEngine, schema: str) -> str:
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        found = await raw.driver_connection.fetchval(_SHAPE_SQL, schema, _templates.pg_relations)  # type: ignore[union-attr]
        return str(found)


async def _pg_script(conn: Any, script: str) -> None:
    """Several statements in one round trip (asyncpg's simple query protocol), in the connection's transaction."""
    raw = await conn.get_raw_connection()
    await raw.driver_connection.execute(script)


async def _pg_new_schema(admin: AsyncEngine) -> tuple[str, AsyncEngine]:
    assert POSTGRES_URL
    schema = "t_" + uuid.uuid4().hex[:16]
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_engine(POSTGRES_URL, schema=schema)
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    _templates.pg_owned.append(schema)
    return schema, engine


async def _pg_prepare(admin: AsyncEngine) -> None:
    """Once per process: the demo schema, the fingerprint of a fresh one, and the scripts that reset a pooled one
    (triggers off while emptying it: the audit trail refuses DELETE, as it should for everyone but this)."""
    async with admin.connect() as conn:
        superuser = await conn.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))
        _templates.pg_superuser = bool(superuser.scalar())
    if not _templates.pg_superuser:
        return
    schema, engine = await _pg_new_schema(admin)
    _templates.pg_owned.remove(schema)
    _templates.pg_demo = schema
    try:
        await load_demo(engine, _templates.dir / "var")
        async with engine.connect() as conn:
            query = "SELECT relname FROM pg_class WHERE relnamespace = CAST(:s AS regnamespace) ORDER BY 1"
            _templates.pg_relations = list((await conn.execute(text(query), {"s": schema})).scalars())
        _templates.pg_shape = await _pg_shape(engine, schema)
        async with engine.connect() as conn:
            found = await conn.execute(
                text("SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = :s ORDER BY 1"),
                {"s": schema},
            )
            sequences = found.all()
    finally:
        await engine.dispose()
    tables = [t.name for t in Base.metadata.sorted_tables]
    empty = ["SET LOCAL session_replication_role = replica"]
    empty += [f'DELETE FROM "{name}"' for name in reversed(tables)]
    demo = list(empty)
    empty += [f"SELECT setval('\"{name}\"', 1, false)" for name, _ in sequences]
    demo += [f'INSERT INTO "{name}" SELECT * FROM "{schema}"."{name}"' for name in tables]
    demo += [
        f"SELECT setval('\"{name}\"', {value}, true)" if value is not None else f"SELECT setval('\"{name}\"', 1, false)"
        for name, value in sequences
    ]
    _templates.pg_reset = {False: ";\n".join(empty), True: ";\n".join(demo)}


async def _pg_database(tmp_path: Path, demo: bool) -> Database:
    assert POSTGRES_URL
    admin = create_engine(POSTGRES_URL)
    try:
        if _templates.pg_superuser is None:
            await _pg_prepare(admin)
        if not _templates.pg_superuser:  # no pool without the right to switch triggers off: build each one
            schema, engine = await _pg_new_schema(admin)
            _templates.pg_owned.remove(schema)
            if demo:
                await load_demo(engine, tmp_path / "demo-var")
            return Database("postgres", POSTGRES_URL, engine, schema, demo_loaded=demo)
        if _templates.pg_pool:
            schema = _templates.pg_pool.pop()
            engine = create_engine(POSTGRES_URL, schema=schema)
        else:
            schema, engine = await _pg_new_schema(admin)
    finally:
        await admin.dispose()
    async with engine.begin() as conn:
        await _pg_script(conn, _templates.pg_reset[demo])
    db = Database("postgres", POSTGRES_URL, engine, schema, demo_loaded=demo)
    db.pooled = True
    return db


async def _make_database(kind: str, tmp_path: Path, *, migrate: bool, demo: bool = False) -> Database:
    """A fresh database of ``kind``: migrated by Alembic (``migrate``), else with the models' tables (a copy of
    this process's template); with the demo network when ``demo``."""
    if not migrate and kind == "sqlite":
        url = f"sqlite+aiosqlite:///{_copy_file(await _sqlite_template(demo), tmp_path)}"
        return Database(kind, url, create_engine(url), None, demo_loaded=demo)
    if not migrate:
        return await _pg_database(tmp_path, demo)
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/telenet.db"
        schema = None
    else:
        assert POSTGRES_URL
        url = POSTGRES_URL
        schema = "t_" + uuid.uuid4().hex[:16]
        admin = create_engine(url)
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await admin.dispose()
    engine = create_engine(url, schema=schema)
    from telenet.store.migrate import upgrade_connection

    async with engine.begin() as conn:
        await upgrade_connection(conn)
    db = Database(kind, url, engine, schema)
    if demo:
        await load_demo(engine, tmp_path / "demo-var")
        db.demo_loaded = True
    return db


async def _drop_database(db: Database) -> None:
    """Dispose of a test's database: a pooled schema whose tables are as create_all made them goes back to the
    pool (emptied when next taken), any other schema is dropped."""
    if db.pooled and db.schema:
        try:
            reusable = await _pg_shape(db.engine, db.schema) == _templates.pg_shape
        except Exception:  # whatever the test left behind, the schema is dropped below
            reusable = False
        await db.engine.dispose()
        if reusable:
            _templates.pg_pool.append(db.schema)
            return
        _templates.pg_owned.remove(db.schema)
    else:
        await db.engine.dispose()
    if not db.schema:
        return
    admin = create_engine(db.url)
    try:
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{db.schema}" CASCADE'))
    finally:
        await admin.dispose()


# Under xdist (make test: ``-n ... --dist loadgroup``) the tests that share an expensive module- or session-scoped
# fixture run on one worker, so that it is made once, not once per worker: a folder or module here is one group.
_SHARED_FIXTURE_GROUPS = (
    "tests/browser/",  # one hub process (console_hub) for them all
    "tests/scaleout/test_claims_and_events.py",  # a cluster of hub processes per module
    "tests/scaleout/test_revocation.py",
    "tests/interop/test_dicom_orthanc.py",  # an Orthanc per module
    "tests/interop/test_tls_peers.py",  # a PKI per module
)
# The long ones first (longest first), everything else after them in collection order, so that no worker is left
# with a long test at the end while the others wait.
_LONG_FIRST = (
    "tests/integration/test_fuzz_rest.py",  # the longest (2.5 minutes at full size)
    "tests/e2e/test_simulator.py",
    "tests/integration/test_fuzz_dicom.py",
    "tests/integration/test_fuzz_hl7.py",
    "tests/browser/",
    "tests/scaleout/",
    "tests/integration/test_surface.py",
    "tests/e2e/",
    "tests/interop/",
    "tests/integration/test_cli.py",
)


def _prefix_rank(nodeid: str, prefixes: tuple[str, ...]) -> int | None:
    return next((i for i, prefix in enumerate(prefixes) if nodeid.startswith(prefix)), None)


def _name_group(item: pytest.Item) -> None:
    """What xdist's loadgroup does to a grouped test's id (``nodeid@group``, the group being what its scheduler
    sends to one worker), done here because pytest 9 keeps the id in ``_id``, where xdist 3.8's ``_nodeid`` no
    longer reaches: without this every ``xdist_group`` marker is silently ignored."""
    marks = item.iter_markers("xdist_group")
    names = sorted({str(mark.args[0] if mark.args else mark.kwargs.get("name", "default")) for mark in marks})
    if not names or "@" in item.nodeid.rpartition("]")[2]:
        return
    grouped = f"{item.nodeid}@{'_'.join(names)}"
    if hasattr(item, "_id"):
        from _pytest.nodeid import NodeId

        item._id = NodeId.parse(grouped)
    else:
        item._nodeid = grouped  # type: ignore[attr-defined]  # pytest before 9


# Seconds before pytest-timeout's limit at which every running event loop prints its tasks' stacks: the thread
# stacks that pytest-timeout prints show a loop waiting in select, not which await never returns.
TASKS_BEFORE_TIMEOUT_S = 15.0


def _print_tasks(loop: asyncio.AbstractEventLoop) -> None:
    print(f"+++ asyncio tasks of {loop!r}, {TASKS_BEFORE_TIMEOUT_S:g} s before the test's timeout +++", file=sys.stderr)
    for task in asyncio.all_tasks(loop):
        task.print_stack(limit=20, file=sys.stderr)


def _event_loops() -> list[asyncio.AbstractEventLoop]:
    loops = []
    for obj in gc.get_objects():
        try:
            if isinstance(obj, asyncio.AbstractEventLoop):
                loops.append(obj)
        except ReferenceError:  # a weak proxy whose object is gone (isinstance looks through it)
            continue
    return loops


def _print_running_loops() -> None:
    for loop in _event_loops():
        if loop.is_running() and not loop.is_closed():
            loop.call_soon_threadsafe(_print_tasks, loop)


@pytest.fixture(autouse=True)
def _tasks_before_timeout(request: pytest.FixtureRequest) -> Iterator[None]:
    """Autouse, so set up first and torn down last: covers the other fixtures' teardown too, where a hang of
    an app's shutdown shows."""
    marker = request.node.get_closest_marker("timeout")
    limit = float(marker.args[0]) if marker and marker.args else float(request.config.getini("timeout") or 0)
    if limit <= TASKS_BEFORE_TIMEOUT_S:
        yield
        return
    timer = threading.Timer(limit - TASKS_BEFORE_TIMEOUT_S, _print_running_loops)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        rank = _prefix_rank(item.nodeid, _SHARED_FIXTURE_GROUPS)
        if rank is not None:
            item.add_marker(pytest.mark.xdist_group(_SHARED_FIXTURE_GROUPS[rank].rstrip("/")))
        elif item.nodeid.startswith("tests/integration/test_surface.py"):
            # The surface fixture is built once per database: one group per database, so both build at once.
            callspec = getattr(item, "callspec", None)
            if callspec is not None and "surface" in callspec.params:
                item.add_marker(pytest.mark.xdist_group(f"surface-{callspec.params['surface']}"))
    if getattr(config.option, "loadgroup", False):  # an xdist worker of --dist loadgroup
        for item in items:
            _name_group(item)
    last = len(_LONG_FIRST)
    ranks = {id(item): _prefix_rank(item.nodeid, _LONG_FIRST) for item in items}
    items.sort(key=lambda item: last if (rank := ranks[id(item)]) is None else rank)  # a stable sort


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop this process's pooled and template schemas; remove its template files."""
    schemas = [*_templates.pg_owned, *([_templates.pg_demo] if _templates.pg_demo else [])]
    if schemas and POSTGRES_URL:
        import asyncio

        async def drop() -> None:
            assert POSTGRES_URL
            admin = create_engine(POSTGRES_URL)
            try:
                async with admin.begin() as conn:
                    for schema in schemas:
                        await conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
            finally:
                await admin.dispose()

        asyncio.run(drop())
    shutil.rmtree(_templates.dir, ignore_errors=True)


def _wants_demo(request: pytest.FixtureRequest) -> bool:
    """Whether this test's database can start as a copy of the demo template: the test uses ``demo_hub`` (which
    then loads nothing) and its clock starts at DEFAULT_NOW, the time the template was loaded at."""
    if "demo_hub" not in request.fixturenames:
        return False
    return bool(request.getfixturevalue("clock").now() == DEFAULT_NOW)


@pytest.fixture(params=engine_params())
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A fresh database on each engine: the models' tables (as create_all makes them), empty; or, for a test
    that uses ``demo_hub``, already holding what ``demo_hub`` would load."""
    db = await _make_database(request.param, tmp_path, migrate=False, demo=_wants_demo(request))
    try:
        yield db
    finally:
        await _drop_database(db)


@pytest.fixture
async def make_database(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Factory for tests that need migrations applied or several databases."""
    made: list[Database] = []

    async def factory(kind: str, *, migrate: bool = False) -> Database:
        db = await _make_database(kind, tmp_path / uuid.uuid4().hex[:8], migrate=migrate)
        made.append(db)
        return db

    yield factory
    for db in made:
        await _drop_database(db)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(DEFAULT_NOW)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        var_dir=str(tmp_path / "var"),
        secret=TEST_SECRET,
        dicom_enabled=False,
        hl7_enabled=False,
    )


@functools.cache
def _demo_file_doc() -> dict[str, Any]:
    """The demo network as the file has it (never changed: a test's copy comes from ``demo_doc``)."""
    doc: dict[str, Any] = json.loads(DEMO_NETWORK.read_text(encoding="utf-8"))
    return doc


@pytest.fixture
def demo_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DEMO_NETWORK.read_text(encoding="utf-8"))
    return doc


@pytest.fixture
async def hub(database: Database, settings: Settings, clock: FixedClock) -> AsyncIterator[Any]:
    from telenet.app import make_hub

    made = make_hub(settings, database.engine, clock)
    yield made
    if made.audit_writer is not None:  # its own SQLite connection and thread (an app closes it on cleanup)
        await made.audit_writer.close()


@pytest.fixture
async def demo_hub(hub: Any, demo_doc: dict[str, Any], database: Database) -> Any:
    """A hub whose database holds the demo network and a password (TEST_PASSWORD) for every demo account."""
    if database.demo_loaded and demo_doc == _demo_file_doc():  # a copy of the demo template (see ``database``)
        return hub
    # An empty database; or the template, and a network that a fixture changed before this one: load that too.
    from sqlalchemy import update

    from telenet.services.network import load_network
    from telenet.store.models import User

    await load_network(hub, demo_doc)
    async with hub.sessions() as session:
        await session.execute(update(User).values(password_hash=password_hash_for_tests()))
        await session.commit()
    return hub


@pytest.fixture
async def client(aiohttp_client: Any, demo_hub: Any, settings: Settings, database: Database, clock: FixedClock) -> Any:
    """A real aiohttp server on loopback around the demo network, with ``login(username)`` helpers."""
    from telenet.app import build_app

    app = build_app(settings, engine=database.engine, clock=clock, background=False)
    from telenet.api.context import HUB

    app[HUB] = demo_hub
    cli = await aiohttp_client(app)
    tokens: dict[str, str] = {}

    async def login(username: str) -> dict[str, str]:
        if username not in tokens:
            resp = await cli.post("/api/v1/auth/token", json={"username": username, "password": TEST_PASSWORD})
            assert resp.status == 200, await resp.text()
            tokens[username] = (await resp.json())["token"]
        return {"Authorization": f"Bearer {tokens[username]}"}

    cli.login = login
    cli.hub = demo_hub
    return cli


@pytest.fixture
async def node(client: Any, settings: Settings) -> AsyncIterator[Any]:
    """The hub's DICOM node on a free port around the ``client`` hub (DICOM test modules override ``settings``
    with ``tests.dicom_fixtures.dicom_settings``)."""
    from tests.dicom_fixtures import node_for

    async with node_for(client.hub, settings) as running:
        yield running
