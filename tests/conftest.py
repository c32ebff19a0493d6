"""Shared fixtures: a fresh database per test on SQLite and (when configured) PostgreSQL, the demo network,
a real aiohttp server, and logins."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


def needs_postgres(what: str) -> pytest.MarkDecorator:
    """Skip a PostgreSQL-only test where no PostgreSQL is configured, except where peers are required (CI):
    there the test runs, and fails loudly without TELENET_TEST_POSTGRES_URL."""
    return pytest.mark.skipif(not POSTGRES_URL and not REQUIRE_PEERS, reason=f"{what} need TELENET_TEST_POSTGRES_URL")


def engine_params() -> list[Any]:
    params = [pytest.param("sqlite", id="sqlite")]
    if POSTGRES_URL:
        params.append(pytest.param("postgres", id="postgres"))
    return params


def require_tool(name: str) -> str:
    """The path of a peer tool; skip with a reason when missing, fail when peers are required (CI)."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install dcmtk orthanc); TELENET_REQUIRE_PEERS=1 fails here"
        if REQUIRE_PEERS:
            pytest.fail(message)
        pytest.skip(message)
    return path


class Database:
    """A database of one test: its URL, engine, and (PostgreSQL) the schema it lives in."""

    def __init__(self, kind: str, url: str, engine: AsyncEngine, schema: str | None) -> None:
        self.kind = kind
        self.url = url
        self.engine = engine
        self.schema = schema


async def _make_database(kind: str, tmp_path: Path, *, migrate: bool) -> Database:
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
    if migrate:
        from telenet.store.migrate import upgrade_connection

        async with engine.begin() as conn:
            await upgrade_connection(conn)
    else:
        async with engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
    return Database(kind, url, engine, schema)


async def _drop_database(db: Database) -> None:
    await db.engine.dispose()
    if db.schema:
        admin = create_engine(db.url)
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{db.schema}" CASCADE'))
        await admin.dispose()


@pytest.fixture(params=engine_params())
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """A fresh, empty schema (tables created from the models) on each engine."""
    db = await _make_database(request.param, tmp_path, migrate=False)
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
        secret="test-secret-not-for-production",
        dicom_enabled=False,
        hl7_enabled=False,
    )


@pytest.fixture
def demo_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DEMO_NETWORK.read_text(encoding="utf-8"))
    return doc


@pytest.fixture
async def hub(database: Database, settings: Settings, clock: FixedClock) -> Any:
    from telenet.app import make_hub

    return make_hub(settings, database.engine, clock)


@pytest.fixture
async def demo_hub(hub: Any, demo_doc: dict[str, Any]) -> Any:
    """A hub whose database holds the demo network and a password for every demo account."""
    from telenet.services.auth import hash_password
    from telenet.services.network import load_network
    from telenet.store.models import User

    await load_network(hub, demo_doc)
    hashed = hash_password(TEST_PASSWORD)
    async with hub.sessions() as session:
        from sqlalchemy import update

        await session.execute(update(User).values(password_hash=hashed))
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
