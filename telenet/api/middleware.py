"""The two middlewares: errors to problem JSON (RFC 9457) in one place, and bearer authentication."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

from telenet.api.context import ACTOR, HUB, PUBLIC
from telenet.api.spec import Handler
from telenet.domain.access import Actor, Role
from telenet.domain.errors import Forbidden, Invalid, Overloaded, TelenetError, TooManyRequests, Unauthorized
from telenet.services import auth, console_sessions
from telenet.store.write_gate import is_lock_timeout

log = logging.getLogger(__name__)

PROBLEM_BASE = "urn:telenet:problem:"


def problem(
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    instance: str | None = None,
    errors: Any = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any] = {"type": PROBLEM_BASE + code, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = errors
    return web.Response(
        status=status,
        text=json.dumps(body, ensure_ascii=False),
        content_type="application/problem+json",
        headers=headers,
    )


_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    429: "Too many requests",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    500: "Internal server error",
    503: "Service unavailable",
}


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except TelenetError as exc:
        headers = {"WWW-Authenticate": 'Bearer realm="telenet"'} if exc.status == 401 else None
        if isinstance(exc, TooManyRequests | Overloaded):
            headers = {"Retry-After": str(exc.retry_after)}
        return problem(
            exc.status,
            exc.code,
            _TITLES.get(exc.status, "Error"),
            exc.message,
            request.path,
            exc.details,
            headers,
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}.get(exc.status, "http-error")
        return problem(
            exc.status,
            code,
            _TITLES.get(exc.status, exc.reason),
            exc.text if exc.text else None,
            request.path,
        )
    except (SQLAlchemyTimeoutError, OperationalError) as exc:
        if isinstance(exc, OperationalError) and not is_lock_timeout(exc):
            log.exception("unhandled error on %s %s", request.method, request.path)
            return problem(500, "internal", "Internal server error", "the error was logged", request.path)
        # Every database connection is busy, or SQLite's write lock was not free within busy_timeout: the hub
        # is overloaded, not broken (the use case was rolled back whole). Tell the client to come back.
        log.warning("database overloaded (%s) on %s %s", type(exc).__name__, request.method, request.path)
        return problem(
            503,
            "overloaded",
            "Service unavailable",
            "the hub is overloaded; retry shortly",
            request.path,
            headers={"Retry-After": "5"},
        )
    except ConnectionResetError:
        transport = request.transport
        if transport is not None and not transport.is_closing():
            # Not this request's connection (a peer the handler talked to): an error like any other.
            log.exception("unhandled error on %s %s", request.method, request.path)
            return problem(500, "internal", "Internal server error", "the error was logged", request.path)
        # The client went away (a WebSocket closed while it was being opened): nobody is left to answer, and
        # it is no error of the hub's. aiohttp drops what is written to a lost connection.
        log.info("client went away during %s %s", request.method, request.path)
        return web.Response(status=499, text="client closed the connection")
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem(500, "internal", "Internal server error", "the error was logged", request.path)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.resource
    canonical = route.canonical if route is not None else request.path
    unmatched = request.match_info.http_exception is not None
    if unmatched or (request.method, canonical) in request.app[PUBLIC] or request.method == "OPTIONS":
        return await handler(request)
    token = bearer_token(request)
    if token is None and (session := request.cookies.get(SESSION_COOKIE)):
        request[ACTOR] = with_break_glass(request, await session_actor(request, session))
        return await handler(request)
    if (
        token is None
        and canonical in FIRST_MESSAGE_SOCKETS
        and request.headers.get("Upgrade", "").lower() == "websocket"
    ):
        return await handler(request)  # the live channel authenticates with its first message (api.ws)
    if token is None:
        raise Unauthorized("a bearer token is required (POST /api/v1/auth/token)", code="missing-token")
    actor = await auth.authenticate(request.app[HUB], token, request.remote)
    request[ACTOR] = with_break_glass(request, actor)
    return await handler(request)


BREAK_GLASS_HEADER = "X-Break-Glass-Reason"


def with_break_glass(request: web.Request, actor: Actor) -> Actor:
    """An administrator's stated reason to see patient data (percent-encoded UTF-8 in the header, so that
    Chinese reasons survive), carried by the actor into every audit row of the request."""
    raw = request.headers.get(BREAK_GLASS_HEADER)
    if raw is None or actor.role is not Role.ADMIN:
        return actor
    reason = unquote(raw).strip()
    if not 4 <= len(reason) <= 200:
        raise Invalid(f"{BREAK_GLASS_HEADER} states a reason of 4 to 200 characters", code="bad-break-glass")
    return replace(actor, break_glass=reason)


SESSION_COOKIE = "telenet_session"
CSRF_HEADER = "X-CSRF-Token"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def session_actor(request: web.Request, session: str) -> Any:
    """The actor of a console session cookie; a change also needs the session's CSRF token (header), and a
    WebSocket handshake from another origin is refused."""
    hub = request.app[HUB]
    actor = await auth.authenticate(hub, session, request.remote)
    if request.method not in _SAFE_METHODS:
        if not console_sessions.csrf_valid(hub.options.secret, session, request.headers.get(CSRF_HEADER)):
            raise Forbidden("a console session needs its CSRF token (X-CSRF-Token) on every change", code="csrf")
    origin = request.headers.get("Origin")
    if origin and request.headers.get("Upgrade", "").lower() == "websocket":
        if origin.split("://", 1)[-1] != request.host:
            raise Forbidden("a console session's WebSocket must come from the console's own origin", code="csrf")
    return actor


#: WebSockets that, without a header or cookie, authenticate with their first message (browsers cannot set
#: headers on a handshake, and a credential never goes in the URL).
FIRST_MESSAGE_SOCKETS = frozenset({"/api/v1/ws", "/api/v1/consultations/{id}/ws"})


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    # No credential is ever taken from the URL (it would end up in access logs and browser history).
    return None
