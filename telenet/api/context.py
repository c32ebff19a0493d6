"""Typed keys of the aiohttp application and request state."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from telenet.domain.access import Actor
from telenet.services.hub import Hub

HUB = web.AppKey("hub", Hub)
PUBLIC = web.AppKey("public_routes", set)
EXTRA = web.AppKey("extra", dict)
ACTOR = web.RequestKey("actor", Actor)


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """JSON in UTF-8 as written (Chinese names stay readable), not \\u escapes."""
    return web.json_response(data, status=status, headers=headers, dumps=dumps)


def encoded_json_response(body: bytes, *, status: int = 200) -> web.Response:
    """JSON already encoded by :func:`dumps` (a page shared by many readers, encoded once)."""
    return web.Response(body=body, status=status, content_type="application/json", charset="utf-8")


def actor_of(request: web.Request) -> Actor:
    actor: Actor = request[ACTOR]
    return actor


def hub_of(request: web.Request) -> Hub:
    return request.app[HUB]


async def read_json(request: web.Request, schema: str) -> Any:
    """The body, parsed and validated against ``schemas/{schema}.schema.json`` (422 listing errors)."""
    from telenet.api.bodies import read_json_body
    from telenet.schemas import validate

    body = await read_json_body(request)
    validate(schema, body)
    return body
