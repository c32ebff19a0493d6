"""Rendering console pages: the template environment, the per-request context (who, which language, the
CSRF token), times in Asia/Shanghai and yuan from fen, and the decorator every page handler wears."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import web

from telenet.api.context import HUB
from telenet.api.middleware import SESSION_COOKIE
from telenet.domain.access import Actor, Role
from telenet.domain.errors import TelenetError, Unauthorized
from telenet.services import auth, console_sessions, console_views, events
from telenet.web import i18n

HERE = Path(__file__).resolve().parent
SHANGHAI = ZoneInfo("Asia/Shanghai")
LANG_COOKIE = "telenet_lang"
PRELOGIN_COOKIE = "telenet_prelogin"
ENV = web.AppKey("jinja_env", jinja2.Environment)


def local_time(value: str | datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A UTC time as a person in the network reads it: Asia/Shanghai."""
    if value is None or value == "":
        return ""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.astimezone(SHANGHAI).strftime(fmt)


def yuan(fen: int | None) -> str:
    """Integer fen as yuan, exactly (no float on the way): 12345 → ¥123.45."""
    if fen is None:
        return ""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(int(fen)), 100)
    return f"{sign}¥{whole:,}.{cents:02d}"


def make_env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["local_time"] = local_time
    env.filters["yuan"] = yuan
    return env


@dataclass
class PageContext:
    """What every page knows about its viewer."""

    request: web.Request
    actor: Actor | None
    lang: str
    session: str | None

    def t(self, key: str) -> str:
        return i18n.translate(self.lang, key)

    @property
    def csrf(self) -> str:
        if self.session is None:
            return self.request.cookies.get(PRELOGIN_COOKIE, "")
        return console_sessions.csrf_token(self.request.app[HUB].options.secret, self.session)

    @property
    def home(self) -> str:
        return home_of(self.actor)


def home_of(actor: Actor | None) -> str:
    if actor is None:
        return "/login"
    if actor.role is Role.COORDINATOR and actor.center_codes:
        return f"/centers/{sorted(actor.center_codes, key=_imaging_first)[0]}/board"
    if actor.role is Role.READER and actor.center_codes:
        return f"/centers/{sorted(actor.center_codes, key=_imaging_first)[0]}/worklist"
    if actor.role is Role.ADMIN:
        return "/admin/registry"
    return "/requests"


def _imaging_first(code: str) -> tuple[bool, str]:
    return (not code.endswith("-IMG"), code)


async def context_of(request: web.Request) -> PageContext:
    lang = i18n.choose(request.cookies.get(LANG_COOKIE), request.headers.get("Accept-Language"))
    session = request.cookies.get(SESSION_COOKIE)
    actor = None
    if session:
        try:
            actor = await auth.authenticate(request.app[HUB], session, request.remote)
        except Unauthorized:
            session = None
    return PageContext(request, actor, lang, session)


async def render(
    ctx: PageContext, template: str, *, status: int = 200, topics: list[str] | None = None, **values: Any
) -> web.Response:
    """A page; ``topics`` are the WebSocket topics it follows (its live regions re-read on their events)."""
    hub = ctx.request.app[HUB]
    banner: list[dict[str, Any]] = []
    live_topics = list(topics or [])
    if ctx.actor is not None:
        banner = await console_views.open_criticals(hub, ctx.actor)
        if ctx.actor.role is Role.REQUESTER:
            live_topics.append(f"requests:{ctx.actor.institution_code}")
    since = await events.last_event_id(hub) if live_topics else 0
    html = (
        ctx.request.app[ENV]
        .get_template(template)
        .render(
            ctx=ctx,
            t=ctx.t,
            actor=ctx.actor,
            criticals=banner,
            topics=" ".join(dict.fromkeys(live_topics)),
            since=since,
            problems=json.dumps(i18n.problems(ctx.lang), ensure_ascii=False),
            **values,
        )
    )
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


def fragment(ctx: PageContext, template: str, **values: Any) -> web.Response:
    """A piece of a page (no frame, banner or live topics): what a live page fetches to update itself."""
    html = ctx.request.app[ENV].get_template(template).render(ctx=ctx, t=ctx.t, actor=ctx.actor, **values)
    return web.Response(text=html, content_type="text/html", charset="utf-8", headers={"Cache-Control": "no-store"})


PageHandler = Callable[[web.Request, PageContext], Awaitable[web.StreamResponse]]


def page(handler: PageHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A page for a logged-in person: to the login form otherwise; service errors become an HTML error page
    (the service already audited the refused attempt)."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        ctx = await context_of(request)
        if ctx.actor is None:
            raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
        try:
            return await handler(request, ctx)
        except TelenetError as exc:
            return await render(ctx, "error.html", status=exc.status, error=exc)

    return wrapped
