"""The console's pages: login and logout, the clinic's screens (new request, my requests, the request page,
the printable report) and the reader's (worklist, the request page with the report form). Every page calls
the same services as the REST API, so their scope rules and audit hold; changes go through the API with
the session's CSRF token."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from telenet.api.context import HUB
from telenet.api.middleware import SESSION_COOKIE
from telenet.domain.access import Role, may_sign_final
from telenet.domain.errors import Forbidden, Invalid, TooManyRequests, Unauthorized
from telenet.domain.lifecycle import Kind, ReturnReason
from telenet.services import (
    attachments,
    console_sessions,
    console_views,
    consultation,
    forwarding,
    queue,
    requests,
    study_views,
)
from telenet.web.i18n import LANGUAGES
from telenet.web.render import LANG_COOKIE, PRELOGIN_COOKIE, PageContext, context_of, page, render

SESSION_MINUTES = web.AppKey("console_session_minutes", int)
# The worklist page shows this many items (most urgent first); the API pages by 200.
WORKLIST_ROWS = 500


def _secure(request: web.Request) -> bool:
    return request.secure or request.headers.get("X-Forwarded-Proto") == "https"


def _safe_next(value: str | None) -> str | None:
    """Only a path on this site (no scheme, no host) is followed after login."""
    if not value or not value.startswith("/") or value.startswith("//"):
        return None
    parts = urlsplit(value)
    return None if parts.scheme or parts.netloc else value


async def login_form(request: web.Request) -> web.StreamResponse:
    ctx = await context_of(request)
    if ctx.actor is not None:
        raise web.HTTPSeeOther(_safe_next(request.query.get("next")) or ctx.home)
    return await _login_page(ctx, request.query.get("next"), None, 200)


async def _login_page(ctx: PageContext, next_path: str | None, error: str | None, status: int) -> web.Response:
    prelogin = ctx.request.cookies.get(PRELOGIN_COOKIE) or secrets.token_urlsafe(24)
    response = await render(ctx, "login.html", status=status, next_path=next_path or "", error=error, token=prelogin)
    response.set_cookie(PRELOGIN_COOKIE, prelogin, httponly=True, samesite="Strict", secure=_secure(ctx.request))
    return response


async def login(request: web.Request) -> web.StreamResponse:
    ctx = await context_of(request)
    form = await request.post()
    prelogin = request.cookies.get(PRELOGIN_COOKIE)
    if not prelogin or form.get("csrf_token") != prelogin:
        return await _login_page(ctx, str(form.get("next", "")), ctx.t("login.failed"), 403)
    hub = request.app[HUB]
    try:
        value, expires = await console_sessions.open_session(
            hub,
            str(form.get("username", "")),
            str(form.get("password", "")),
            request.app[SESSION_MINUTES],
            request.remote,
        )
    except Unauthorized:
        return await _login_page(ctx, str(form.get("next", "")), ctx.t("login.failed"), 401)
    except TooManyRequests:
        return await _login_page(ctx, str(form.get("next", "")), ctx.t("login.too_many"), 429)
    target = _safe_next(str(form.get("next", ""))) or "/"
    response = web.HTTPSeeOther(target)
    response.set_cookie(
        SESSION_COOKIE,
        value,
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
        path="/",
        expires=expires.strftime("%a, %d %b %Y %H:%M:%S GMT"),
    )
    response.del_cookie(PRELOGIN_COOKIE)
    raise response


async def _require_form_csrf(request: web.Request, ctx: PageContext) -> Any:
    form = await request.post()
    if not ctx.csrf or form.get("csrf_token") != ctx.csrf:
        raise Forbidden("the form's CSRF token is missing or wrong", code="csrf")
    return form


async def logout(request: web.Request) -> web.StreamResponse:
    ctx = await context_of(request)
    if ctx.session is not None:
        await _require_form_csrf(request, ctx)
        await console_sessions.close_session(request.app[HUB], ctx.session)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


async def switch_language(request: web.Request) -> web.StreamResponse:
    ctx = await context_of(request)
    form = await _require_form_csrf(request, ctx)
    lang = str(form.get("lang", ""))
    target = _safe_next(str(form.get("next", ""))) or "/"
    response = web.HTTPSeeOther(target)
    if lang in LANGUAGES:
        response.set_cookie(LANG_COOKIE, lang, samesite="Strict", secure=_secure(request), path="/")
    raise response


@page
async def home(request: web.Request, ctx: PageContext) -> web.StreamResponse:
    raise web.HTTPSeeOther(ctx.home)


@page
async def my_requests(request: web.Request, ctx: PageContext) -> web.StreamResponse:
    assert ctx.actor is not None
    listing = await requests.list_requests(request.app[HUB], ctx.actor, limit=100)
    return await render(ctx, "requests.html", items=listing["items"])


@page
async def new_request(request: web.Request, ctx: PageContext) -> web.StreamResponse:
    assert ctx.actor is not None
    if ctx.actor.role is not Role.REQUESTER:
        raise Forbidden("only requesting clinicians order", code="role")
    return await render(ctx, "new_request.html")


def _request_id(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError:
        raise Invalid("the request id must be a number", code="bad-parameter") from None


async def _request_values(request: web.Request, ctx: PageContext) -> dict[str, Any]:
    assert ctx.actor is not None
    hub = request.app[HUB]
    rid = _request_id(request)
    view = await requests.get(hub, ctx.actor, rid)
    studies = await study_views.request_studies(hub, ctx.actor, rid)
    files = await attachments.list_for(hub, ctx.actor, rid)
    reports = [r for r in view["reports"] if r["status"] != "addendum"]
    return {
        "r": view,
        "studies": studies["studies"],
        "attachments": files,
        "reports": reports,
        "addenda": [r for r in view["reports"] if r["status"] == "addendum"],
        "final": next((r for r in reports if r["status"] == "final"), None),
        "draft": next((r for r in reports if r["status"] == "preliminary"), None),
    }


@page
async def request_page(request: web.Request, ctx: PageContext) -> web.StreamResponse:
    assert ctx.actor is not None
    values = await _request_values(request, ctx)
    view = values["r"]
    actor = ctx.actor
    is_reader = actor.role is Role.READER
    values.update(
        {
            "holder": view["claimed_by"] == actor.username,
            "is_reader": is_reader,
            "is_requester": actor.role is Role.REQUESTER,
            "may_sign": is_reader and may_sign_final(actor, request.app[HUB].clock.now().date()),
            "templates": console_views.templates_for(view["modality"], view["body_part"]),
            "return_reasons": [r.value for r in ReturnReason],
            "open_criticals": [c for c in view["critical_findings"] if not c["acknowledged_at"]],
        }
    )
    values["c"] = (
        await consultation.get(request.app[HUB], actor, view["id"]) if view["kind"] == Kind.CONSULTATION.value else None
    )
    return await render(ctx, "request.html", topics=[f"request:{view['id']}"], **values)


@page
async def print_report(request: web.Request, ctx: PageContext) -> web.StreamResponse:
    values = await _request_values(request, ctx)
    return await render(ctx, "print.html", **values)


@page
async def worklist(request: web.Request, ctx: PageContext) -> web.StreamResponse:
    assert ctx.actor is not None
    code = request.match_info["code"]
    listing = await queue.worklist(request.app[HUB], ctx.actor, code, limit=WORKLIST_ROWS)
    return await render(
        ctx,
        "worklist.html",
        topics=[f"worklist:{code}"],
        center=code,
        centers=sorted(ctx.actor.center_codes),
        items=listing["items"],
    )


@page
async def center_board(request: web.Request, ctx: PageContext) -> web.StreamResponse:
    assert ctx.actor is not None
    if ctx.actor.role is not Role.COORDINATOR:
        raise Forbidden("the center board is the coordinators'", code="role")
    hub = request.app[HUB]
    code = request.match_info["code"]
    listing = await queue.worklist(hub, ctx.actor, code, limit=200)
    unmatched = await study_views.reconciliation_list(hub, ctx.actor, limit=50)
    jobs = await forwarding.list_jobs(hub, ctx.actor, state="pending", limit=50)
    return await render(
        ctx,
        "board.html",
        topics=[f"worklist:{code}"],
        center=code,
        items=listing["items"],
        b=console_views.board(listing["items"]),
        unmatched=unmatched["items"],
        forwarding={"items": [j for j in jobs["items"] if j["center"] == code], "outages": jobs["outages"]},
    )


@page
async def upload(request: web.Request, ctx: PageContext) -> web.StreamResponse:
    assert ctx.actor is not None
    if ctx.actor.role is not Role.REQUESTER:
        raise Forbidden("only clinics upload studies", code="role")
    return await render(ctx, "upload.html")


def install(app: web.Application) -> set[tuple[str, str]]:
    """Add the pages; the (method, path) pairs they answer, which authenticate themselves (login redirect)."""
    table = [
        ("GET", "/", home),
        ("GET", "/login", login_form),
        ("POST", "/login", login),
        ("POST", "/logout", logout),
        ("POST", "/lang", switch_language),
        ("GET", "/requests", my_requests),
        ("GET", "/requests/new", new_request),
        ("GET", "/requests/{id}", request_page),
        ("GET", "/requests/{id}/print", print_report),
        ("GET", "/centers/{code}/worklist", worklist),
        ("GET", "/upload", upload),
        ("GET", "/centers/{code}/board", center_board),
    ]
    for method, path, handler in table:
        app.router.add_route(method, path, handler)
    return {(method, path) for method, path, _ in table}
