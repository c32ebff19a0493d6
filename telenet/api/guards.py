"""Who may read the operations endpoints: ``/metrics`` from configured networks, or with an admin or
integration token."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from aiohttp import web

from telenet.api.context import EXTRA, hub_of
from telenet.api.middleware import bearer_token
from telenet.domain.access import Role
from telenet.domain.errors import Forbidden, Invalid, Unauthorized
from telenet.services import auth

DEFAULT_METRICS_NETWORKS = "127.0.0.1/32,::1/128"
METRICS_ROLES = frozenset({Role.ADMIN, Role.INTEGRATION})


@lru_cache(maxsize=32)
def parse_networks(spec: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``"10.0.0.0/8, ::1/128"`` as networks; a bad entry is a configuration error."""
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in spec.split(",") if part.strip())
    except ValueError as exc:
        raise Invalid(f"bad network list {spec!r}: {exc}", code="bad-setting") from None


def address_in(remote: str | None, networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]) -> bool:
    if not remote:
        return False
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return False
    return any(address in network for network in networks)


async def require_metrics_access(request: web.Request) -> None:
    """Scrapers on the configured networks need no token; anyone else an admin or integration token."""
    networks = parse_networks(str(request.app[EXTRA].get("metrics_networks", DEFAULT_METRICS_NETWORKS)))
    if address_in(request.remote, networks):
        return
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("/metrics needs an admin or integration token from this address", code="missing-token")
    actor = await auth.authenticate(hub_of(request), token, request.remote)
    if actor.role not in METRICS_ROLES:
        raise Forbidden("/metrics is for administrators and integration accounts", code="forbidden-role")
