"""Health, authentication, the registry directory and the audit trail."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import text

from telenet import __version__
from telenet.api.context import EXTRA, actor_of, hub_of, json_response, read_json
from telenet.api.spec import (
    PAGE_ID,
    TIME,
    TIME_PATTERN,
    Routes,
    in_years,
    integer,
    one_of,
    openapi_document,
    written_as,
)
from telenet.domain.errors import Invalid
from telenet.services import login, registry

routes = Routes()
CENTER_SERVICES = ("imaging", "ecg", "consultation")


def query_int(request: web.Request, name: str, default: int, *, low: int = 0, high: int = 1000) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Invalid(f"query parameter {name} must be an integer", code="bad-parameter") from None
    if not low <= value <= high:
        raise Invalid(f"query parameter {name} must be between {low} and {high}", code="bad-parameter")
    return value


def query_time(request: web.Request, name: str) -> datetime | None:
    raw = written_as(request.query.get(name), name, TIME_PATTERN)
    if raw is None:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise Invalid(f"query parameter {name} must be an ISO 8601 time", code="bad-parameter") from None
    if value.tzinfo is None:
        raise Invalid(
            f"query parameter {name} needs a UTC offset (e.g. 2026-01-01T00:00:00+08:00)",
            code="bad-parameter",
        )
    return in_years(value, name)


@routes.add(
    "GET",
    "/healthz",
    summary="Liveness and database reachability",
    tag="operations",
    public=True,
    responses={"200": "healthy", "503": "database unreachable"},
)
async def healthz(request: web.Request) -> web.Response:
    hub = hub_of(request)
    extra = request.app[EXTRA]
    probe = extra.get("health_probe")
    if probe is None:
        probe = extra["health_probe"] = HealthProbe()
    db = await probe.database(hub)
    status = 200 if db == "ok" else 503
    return json_response(
        {
            "status": "ok" if status == 200 else "degraded",
            "version": __version__,
            "database": db,
            "dialect": hub.dialect,
            "interfaces": extra.get("interfaces", {}),
        },
        status=status,
    )


class HealthProbe:
    """The database's reachability as ``/healthz`` reports it: probed on a read session (never queued behind
    writers) at most once per ``max_age`` seconds, one probe shared by every request that arrives meanwhile,
    so a load balancer's or monitor's polling costs no database work per request."""

    def __init__(self, max_age: float = 1.0) -> None:
        self.max_age = max_age
        self.result = "unknown"
        self.at = -max_age - 1.0
        self._probe: asyncio.Future[str] | None = None

    async def database(self, hub: Any) -> str:
        if time.monotonic() - self.at < self.max_age:
            return self.result
        if self._probe is None:
            self._probe = asyncio.ensure_future(self._run(hub))
        return await asyncio.shield(self._probe)

    async def _run(self, hub: Any) -> str:
        try:
            async with hub.reader() as session:
                await session.execute(_SELECT_1)
            result = "ok"
        except Exception as exc:  # the probe reports, it does not raise
            result = f"error: {type(exc).__name__}"
        self.result, self.at, self._probe = result, time.monotonic(), None
        return result


_SELECT_1 = text("select 1")


@routes.add("GET", "/api/v1/openapi.json", summary="This OpenAPI document", tag="operations", public=True)
async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document(request.app[EXTRA]["endpoints"]))


@routes.add(
    "POST",
    "/api/v1/auth/token",
    summary="Exchange username and password for a bearer token",
    tag="auth",
    public=True,
    body="api/token",
    responses={
        "200": "token issued",
        "401": "bad credentials",
        "422": "invalid body",
        "429": "too many attempts or account locked (Retry-After)",
    },
)
async def issue_token(request: web.Request) -> web.Response:
    body = await read_json(request, "api/token")
    result = await login.login(hub_of(request), body["username"], body["password"], request.remote)
    return json_response(result)


@routes.add(
    "GET",
    "/api/v1/institutions",
    summary="The institution directory",
    tag="registry",
    query=(
        ("tier", "province|city|county|township|village", one_of("province", "city", "county", "township", "village")),
        ("within", "institution code: its subtree"),
        ("limit", "page size (max 1000)", integer(1, 1000)),
        ("offset", "page offset", integer(0, 10**9)),
    ),
)
async def list_institutions(request: web.Request) -> web.Response:
    result = await registry.list_institutions(
        hub_of(request),
        actor_of(request),
        tier=request.query.get("tier"),
        within=request.query.get("within"),
        limit=query_int(request, "limit", 500, low=1),
        offset=query_int(request, "offset", 0, high=10**9),
    )
    return json_response(result)


@routes.add(
    "GET",
    "/api/v1/institutions/{code}",
    summary="One institution",
    tag="registry",
    responses={"200": "the institution", "404": "unknown code"},
)
async def get_institution(request: web.Request) -> web.Response:
    return json_response(await registry.get_institution(hub_of(request), actor_of(request), request.match_info["code"]))


@routes.add(
    "GET",
    "/api/v1/centers",
    summary="Reading and consultation centers",
    tag="registry",
    query=(("service", "imaging|ecg|consultation", one_of(*CENTER_SERVICES)),),
)
async def list_centers(request: web.Request) -> web.Response:
    service = request.query.get("service")
    if service is not None and service not in CENTER_SERVICES:
        raise Invalid(f"service is one of {', '.join(CENTER_SERVICES)}", code="bad-parameter")
    return json_response(
        await registry.list_centers(hub_of(request), actor_of(request), service=request.query.get("service"))
    )


@routes.add(
    "GET",
    "/api/v1/audit",
    summary="Audit trail of the admin's subtree",
    tag="registry",
    roles="admin",
    query=(
        ("institution", "restrict to this institution's subtree"),
        ("action", "e.g. request.read"),
        ("since", "ISO 8601 with a UTC offset", TIME),
        ("until", "ISO 8601 with a UTC offset", TIME),
        ("limit", "page size (max 1000)", integer(1, 1000)),
        ("before_id", "continue below this id", PAGE_ID),
    ),
)
async def list_audit(request: web.Request) -> web.Response:
    before = request.query.get("before_id")
    result = await registry.list_audit(
        hub_of(request),
        actor_of(request),
        institution=request.query.get("institution"),
        action=request.query.get("action"),
        since=query_time(request, "since"),
        until=query_time(request, "until"),
        limit=query_int(request, "limit", 100, low=1),
        before_id=query_int(request, "before_id", 0, high=2**62) if before is not None else None,
    )
    return json_response(result)
