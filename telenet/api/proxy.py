"""The client's address and transport as the hub believes them: ``X-Forwarded-For``/``-Proto`` count only
from configured reverse proxies (``trusted_proxies``); with ``plain_loopback_only`` plain HTTP from anywhere
but loopback is refused."""

from __future__ import annotations

from aiohttp import web

from telenet.api.context import EXTRA
from telenet.api.guards import address_in, parse_networks
from telenet.api.spec import Handler
from telenet.domain.errors import Forbidden
from telenet.tls import is_loopback


def forwarded_client(request: web.Request) -> tuple[str | None, bool]:
    """(client address, whether the client's own connection is TLS), through trusted proxies only."""
    peer = request.remote
    secure = request.secure
    proxies = parse_networks(str(request.app[EXTRA].get("trusted_proxies", "")))
    if not proxies or not address_in(peer, proxies):
        return peer, secure
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    client = peer
    # The rightmost address that is not one of our proxies is the client; anything left of it is its claim.
    for hop in reversed(hops):
        client = hop
        if not address_in(hop, proxies):
            break
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return client, secure or proto == "https"


@web.middleware
async def client_address_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    client, secure = forwarded_client(request)
    if request.app[EXTRA].get("plain_loopback_only") and not secure and not is_loopback(request.remote):
        raise Forbidden("plain HTTP is refused from this address; use HTTPS", code="tls-required")
    if client is not None and client != request.remote:
        request = request.clone(remote=client)
    return await handler(request)
