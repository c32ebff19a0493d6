"""The problem middleware maps an exhausted connection pool, and SQLite's write lock not free within its busy
timeout, to 503 with Retry-After, not to a 500; any other database error stays a 500."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

from telenet.api.middleware import problem_middleware


async def served(aiohttp_client: Any, **handlers: Any) -> Any:
    """A test client of an app with only the problem middleware and ``handlers`` at ``/<name>``."""
    app = web.Application(middlewares=[problem_middleware])
    for name, handler in handlers.items():
        app.router.add_get(f"/{name}", handler)
    return await aiohttp_client(app)


async def assert_overloaded_then_internal(client: Any, overloaded: str, internal: str) -> None:
    resp = await client.get(overloaded)
    assert resp.status == 503 and resp.headers["Retry-After"] == "5"
    assert (await resp.json())["type"] == "urn:telenet:problem:overloaded"
    resp = await client.get(internal)
    assert resp.status == 500 and (await resp.json())["type"] == "urn:telenet:problem:internal"


async def test_overload_is_503_with_retry_after(aiohttp_client: Any) -> None:
    async def busy(_request: web.Request) -> web.Response:
        raise SQLAlchemyTimeoutError("QueuePool limit reached")

    async def broken(_request: web.Request) -> web.Response:
        raise RuntimeError("bug")

    await assert_overloaded_then_internal(await served(aiohttp_client, busy=busy, broken=broken), "/busy", "/broken")


def _locked_error(path: Path) -> OperationalError:
    """The error SQLAlchemy raises when a SQLite writer waits out its busy timeout: made for real, with one
    connection holding the write lock and another asking for it."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
    try:
        with engine.connect() as conn, pytest.raises(OperationalError) as raised:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        return raised.value
    finally:
        engine.dispose()
        holder.execute("ROLLBACK")
        holder.close()


async def test_a_write_lock_not_had_in_time_is_503_and_other_database_errors_500(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    locked = _locked_error(tmp_path / "locked.db")
    assert "database is locked" in str(locked)

    async def waits_for_the_lock(_request: web.Request) -> web.Response:
        raise locked

    async def bad_sql(_request: web.Request) -> web.Response:
        engine = create_engine(f"sqlite:///{tmp_path / 'other.db'}")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT * FROM no_such_table")
        finally:
            engine.dispose()
        return web.Response()

    client = await served(aiohttp_client, locked=waits_for_the_lock, bad=bad_sql)
    await assert_overloaded_then_internal(client, "/locked", "/bad")


async def test_a_client_gone_is_no_error_of_the_hubs(aiohttp_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A connection lost while the handler ran (a WebSocket closed while it was opened) is logged at INFO, not
    as an unhandled error with a traceback; a reset of another connection the handler used stays a 500."""

    async def gone(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.close()  # the client's connection is lost while the handler runs
        raise ConnectionResetError("Connection lost")

    async def peer_reset(_request: web.Request) -> web.Response:
        raise ConnectionResetError("a peer the handler called reset its connection")

    client = await served(aiohttp_client, gone=gone, peer=peer_reset)
    with caplog.at_level("INFO", logger="telenet.api.middleware"):
        with pytest.raises(aiohttp.ClientError):
            await (await client.get("/gone")).read()
        assert [r.levelname for r in caplog.records if r.name == "telenet.api.middleware"] == ["INFO"]
        resp = await client.get("/peer")
    assert resp.status == 500 and (await resp.json())["type"] == "urn:telenet:problem:internal"
    assert [r.levelname for r in caplog.records if r.name == "telenet.api.middleware"] == ["INFO", "ERROR"]
