"""Endpoint declarations: each route is declared once, with what the OpenAPI document says of it."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, TypeAlias, TypeVar

from aiohttp import web

from telenet import __version__
from telenet.schemas import load_schema

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: A query parameter: (name, description) is any string; (name, description, JSON Schema) says exactly
#: what the handler accepts (integer bounds, enumerations, formats), so that the document and the
#: validation never disagree (the REST fuzzing holds the server to it).
Query: TypeAlias = tuple[str, str] | tuple[str, str, dict[str, Any]]

MAX_ID = 2**63 - 1
#: A numeric path id as :func:`telenet.api.bodies.path_id` reads it (422 when not a number, 404 past 64 bits).
ID = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
PAGE_ID = {"type": "integer", "minimum": 0, "maximum": 2**62}
#: Years a stored time may have (1900 to 9998): one in year 1 or 9999 with an offset does not fit UTC.
YEARS = r"^(19[0-9]{2}|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])-"
#: RFC 3339 as ``datetime.fromisoformat`` reads it (upper-case T and Z; a date alone for DATE).
DATE_PATTERN = YEARS[:-1] + r"-[0-9]{2}-[0-9]{2}$"
TIME_PATTERN = YEARS[:-1] + r"-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
DATE = {"type": "string", "format": "date", "pattern": DATE_PATTERN}
TIME = {"type": "string", "format": "date-time", "pattern": TIME_PATTERN}


def written_as(raw: str | None, name: str, *patterns: str) -> str | None:
    """``raw`` when it is written as one of ``patterns`` (DATE_PATTERN, TIME_PATTERN), else 422: the forms
    ``fromisoformat`` reads beyond RFC 3339 (``20260302``, a space for T) are not what the document says."""
    from telenet.domain.errors import Invalid

    if raw is not None and not any(re.fullmatch(p, raw) for p in patterns):
        raise Invalid(f"{name} is written as the document says (RFC 3339, years 1900 to 9998)", code="bad-parameter")
    return raw


#: YYYY-MM, a month of those years.
MONTH = {"type": "string", "pattern": YEARS[:-1] + r"-(0[1-9]|1[0-2])$"}


T = TypeVar("T", bound="date | None")


def in_years(moment: T, name: str) -> T:
    """``moment`` (a date or datetime, or None) when its year is one of :data:`YEARS`, else 422."""
    from telenet.domain.errors import Invalid

    if moment is not None and not 1900 <= moment.year <= 9998:
        raise Invalid(f"{name} must lie in the years 1900 to 9998", code="bad-parameter")
    return moment


def integer(low: int, high: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": low, "maximum": high}


def one_of(*values: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


#: A DICOM UID as the DICOMweb routes check it (digits and dots, at most 64 characters).
UID = {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)*$", "maxLength": 64}
#: Path parameters by name unless an endpoint says otherwise: ids are numbers, UIDs are UIDs, the rest
#: non-empty text.
PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "id": ID,
    "study": UID,
    "series": UID,
    "instance": UID,
    "uid": UID,
    "frames": {"type": "string", "pattern": r"^0*[1-9][0-9]{0,8}(,0*[1-9][0-9]{0,8})*$", "maxLength": 20_000},
    "tag": {"type": "string", "pattern": "^[0-9A-Fa-f]{8}$"},
}


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    public: bool = False
    body_schema: str | None = None
    query: tuple[Query, ...] = ()
    responses: dict[str, str] = field(default_factory=dict)
    roles: str | None = None
    path_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: A body that is not JSON: media type -> OpenAPI media object (STOW-RS multipart, attachments).
    raw_body: dict[str, Any] | None = None
    headers: tuple[Query, ...] = ()
    #: What the service checks beyond the body's JSON Schema (which leaves those rules to the service for its
    #: own error codes, e.g. consent-missing), merged into the document so that it says what is accepted:
    #: "required" is added to, "properties" are merged member by member, other keys are set.
    body_doc: dict[str, Any] = field(default_factory=dict)


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
        query: tuple[Query, ...] = (),
        roles: str | None = None,
        responses: dict[str, str] | None = None,
        path_params: dict[str, dict[str, Any]] | None = None,
        raw_body: dict[str, Any] | None = None,
        headers: tuple[Query, ...] = (),
        body_doc: dict[str, Any] | None = None,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.endpoints.append(
                Endpoint(
                    method,
                    path,
                    handler,
                    summary,
                    tag,
                    public,
                    body,
                    query,
                    responses or {},
                    roles,
                    path_params or {},
                    raw_body,
                    headers,
                    body_doc or {},
                )
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
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": ep.path_params.get(name) or PATH_SCHEMAS.get(name) or {"type": "string", "minLength": 1},
            }
            for name in _path_params(ep.path)
        ]
        params += [_parameter(item, "query") for item in ep.query]
        params += [_parameter(item, "header") for item in ep.headers]
        if params:
            op["parameters"] = params
        if ep.body_schema:
            key = ep.body_schema.replace("/", "_")
            schema = dict(load_schema(ep.body_schema))
            schema.pop("$schema", None)
            schema = _with_service_rules(_embedded(key, schema, schemas), ep.body_doc)
            schemas[key] = schema
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{key}"}}},
            }
        elif ep.raw_body:
            op["requestBody"] = {"required": True, "content": ep.raw_body}
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


def _embedded(key: str, schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """A schema file placed under components: its ``$defs`` become components of their own (``{key}.{name}``)
    and its local ``#/$defs/...`` references point at them, since ``#`` is now the OpenAPI document."""
    defs = schema.pop("$defs", None) or {}
    prefix = "#/$defs/"

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(prefix):
                node = {**node, "$ref": f"#/components/schemas/{key}.{ref[len(prefix) :]}"}
            return {k: rewrite(v) for k, v in node.items()}
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    for name, definition in defs.items():
        schemas[f"{key}.{name}"] = rewrite(definition)
    return dict(rewrite(schema))


def _with_service_rules(schema: dict[str, Any], rules: dict[str, Any]) -> dict[str, Any]:
    out = dict(schema)
    for key, value in rules.items():
        if key == "required":
            out["required"] = [*out.get("required", []), *value]
        elif key == "properties":
            out["properties"] = {**out.get("properties", {})}
            for name, extra in value.items():
                out["properties"][name] = {**out["properties"].get(name, {}), **extra}
        else:
            out[key] = value
    return out


def _parameter(item: Query, where: str) -> dict[str, Any]:
    name, text = item[0], item[1]
    schema = item[2] if len(item) > 2 else {"type": "string"}
    required = where == "header" or bool(schema.get("x-required"))
    clean = {k: v for k, v in schema.items() if k != "x-required"}
    return {"name": name, "in": where, "required": required, "schema": clean, "description": text}


_PATH_PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")


def _path_params(path: str) -> list[str]:
    return _PATH_PARAM.findall(path)
