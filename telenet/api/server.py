"""Build the aiohttp application from declared routes."""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

from telenet.api.context import EXTRA, HUB, PUBLIC
from telenet.api.middleware import auth_middleware, problem_middleware
from telenet.api.proxy import client_address_middleware
from telenet.api.spec import Routes
from telenet.services.hub import Hub

MAX_BODY_BYTES = 4 * 1024 * 1024


def build_web_app(hub: Hub, route_sets: Iterable[Routes]) -> web.Application:
    app = web.Application(
        middlewares=[problem_middleware, client_address_middleware, auth_middleware], client_max_size=MAX_BODY_BYTES
    )
    app[HUB] = hub
    endpoints = []
    for routes in route_sets:
        routes.install(app)
        endpoints.extend(routes.endpoints)
    app[PUBLIC] = {(ep.method, ep.path) for ep in endpoints if ep.public}
    app[EXTRA] = {"endpoints": endpoints}
    return app
