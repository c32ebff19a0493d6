"""The problem middleware maps an exhausted connection pool to 503 with Retry-After, not to a 500."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

from telenet.api.middleware import problem_middleware


async def test_overload_is_503_with_retry_after(aiohttp_client: Any) -> None:
    async def busy(_request: web.Request) -> web.Response:
        raise SQLAlchemyTimeoutError("QueuePool limit reached")

    async def broken(_request: web.Request) -> web.Response:
        raise RuntimeError("bug")

    app = web.Application(middlewares=[problem_middleware])
    app.router.add_get("/busy", busy)
    app.router.add_get("/broken", broken)
    client = await aiohttp_client(app)
    resp = await client.get("/busy")
    assert resp.status == 503 and resp.headers["Retry-After"] == "5"
    assert (await resp.json())["type"] == "urn:telenet:problem:overloaded"
    resp = await client.get("/broken")
    assert resp.status == 500 and (await resp.json())["type"] == "urn:telenet:problem:internal"
