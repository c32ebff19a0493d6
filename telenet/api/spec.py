"""Endpoint declarations: each route is declared once, with what the OpenAPI document says of it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from telenet import __version__
from telenet.schemas import load_schema

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    public: bool = False
    body_schema: str | None = None
    query: tuple[tuple[str, str], ...] = ()
    responses: dict[str, str] = field(default_factory=dict)
    roles: str | None = None


class Routes:
    """A list of endpoints that both wires aiohttp routes and describes them in OpenAPI."""

    def __init__(self) -> None:
        self.endpoints: list[Endpoint] = []

    def add(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        tag: str,
        public: bool = False,
        body: str | None = None,
        query: tuple[tuple[str, str], ...] = (),
        roles: str | None = None,
        responses: dict[str, str] | None = None,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.endpoints.append(
                Endpoint(method, path, handler, summary, tag, public, body, query, responses or {}, roles)
            )
            return handler

        return register

    def install(self, app: web.Application) -> None:
        for ep in self.endpoints:
            app.router.add_route(ep.method, ep.path, ep.handler)

    def public_paths(self) -> set[tuple[str, str]]:
        return {(ep.method, ep.path) for ep in self.endpoints if ep.public}


_PROBLEM = {
    "description": "Problem (RFC 9457)",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


def openapi_document(endpoints: list[Endpoint]) -> dict[str, Any]:
    """OpenAPI 3.1 for every declared endpoint; request bodies reference the JSON Schemas in schemas/."""
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {
        "Problem": {
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "instance": {"type": "string"},
                "errors": {"type": "array", "items": {"type": "object"}},
            },
            "required": ["type", "title", "status"],
        }
    }
    for ep in endpoints:
        op: dict[str, Any] = {
            "summary": ep.summary,
            "tags": [ep.tag],
            "operationId": f"{ep.method.lower()}_{ep.handler.__name__}",
            "responses": {code: {"description": text} for code, text in (ep.responses or {"200": "OK"}).items()},
        }
        if ep.roles:
            op["description"] = f"Roles: {ep.roles}."
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _path_params(ep.path)
        ]
        params += [
            {
                "name": name,
                "in": "query",
                "required": False,
                "schema": {"type": "string"},
                "description": text,
            }
            for name, text in ep.query
        ]
        if params:
            op["parameters"] = params
        if ep.body_schema:
            key = ep.body_schema.replace("/", "_")
            schema = dict(load_schema(ep.body_schema))
            schema.pop("$schema", None)
            schemas[key] = schema
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{key}"}}},
            }
        if not ep.public:
            op["security"] = [{"bearer": []}]
            op["responses"].setdefault("401", _PROBLEM)
            op["responses"].setdefault("403", _PROBLEM)
        op["responses"].setdefault("default", _PROBLEM)
        paths.setdefault(ep.path, {})[ep.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "telenet hub API",
            "version": __version__,
            "description": "REST and WebSocket interface of the telemedicine hub (远程医疗协作网).",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _path_params(path: str) -> list[str]:
    return [part[1:-1].split(":")[0] for part in path.split("/") if part.startswith("{") and part.endswith("}")]
