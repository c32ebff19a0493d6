"""The console: server-rendered pages, static ES modules and the OHIF viewer, served by the hub at ``/``."""

from __future__ import annotations

from aiohttp import web

from telenet.api.context import EXTRA, PUBLIC
from telenet.config import Settings
from telenet.web import admin_pages, pages, viewer
from telenet.web.render import ENV, HERE, make_env

CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """A strict CSP on everything the console serves (no inline script or style anywhere); OHIF, which is
    not ours and needs WebAssembly and workers, gets its own."""
    if request.path.startswith("/ohif/") or request.path == "/ohif":
        response.headers.setdefault("Content-Security-Policy", viewer.CSP)
    elif not request.path.startswith("/api/") and not request.path.startswith("/dicom-web"):
        response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")


def install(app: web.Application, settings: Settings) -> None:
    """Pages, static files and the viewer on the hub's application (the composition root calls this)."""
    app[ENV] = make_env()
    app[pages.SESSION_MINUTES] = settings.console_session_minutes
    public = pages.install(app) | admin_pages.install(app)
    app.router.add_static("/static/", HERE / "static", name="static", append_version=False)
    public |= {("GET", "/static"), ("HEAD", "/static")}
    public |= viewer.install(app, settings)
    app[PUBLIC] |= public
    # Not API endpoints (no OpenAPI entries): the pages, static files and the viewer authenticate themselves.
    app[EXTRA]["console_routes"] = frozenset(public)
    app.on_response_prepare.append(_security_headers)
