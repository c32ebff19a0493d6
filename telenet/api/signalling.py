"""A consultation's live session: ``WS /api/v1/consultations/{id}/ws``. The hub relays WebRTC signalling
(offers, answers, ICE candidates) between the participants of one session and tells each who is present,
so two browsers on a LAN hold an audio/video call with no other server; STUN/TURN servers are handed out
from the settings (``TELENET_WEBRTC_ICE_SERVERS``).

Messages from a client: ``{"type": "signal", "to": <peer id>, "data": {...}}`` (relayed to that peer only,
as ``{"type": "signal", "from": <peer id>, "data": ...}``). From the hub: ``welcome`` (your peer id, the ICE
servers, who is here), ``presence`` (joined / left) and ``error``. Signalling is ephemeral and stays in this
process: a session's participants meet on the hub process they connect to.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from aiohttp import WSMsgType, web

from telenet.api.context import ACTOR, EXTRA, hub_of
from telenet.api.request_routes import request_id
from telenet.api.spec import Routes
from telenet.api.ws import CLOSE_FORBIDDEN, CLOSE_UNAUTHORIZED, first_message_auth, refuse_credentials_in_url
from telenet.domain.access import Actor
from telenet.domain.errors import Forbidden, TelenetError
from telenet.services import live_session

log = logging.getLogger(__name__)
routes = Routes()

MAX_SIGNAL_BYTES = 64 * 1024
_STATIC = Path(__file__).resolve().parent / "consultation_static"
_PAGES = {"session.html": "text/html", "session.js": "text/javascript"}
_ids = itertools.count(1)


def ice_servers(setting: str) -> list[dict[str, Any]]:
    """``stun:host:port`` and ``turn:user:password@host:port`` (comma-separated) as RTCIceServer objects."""
    servers: list[dict[str, Any]] = []
    for raw in (part.strip() for part in setting.split(",")):
        if not raw:
            continue
        scheme, _, rest = raw.partition(":")
        if scheme not in ("stun", "stuns", "turn", "turns") or not rest:
            raise ValueError(f"ICE server {raw!r}: stun:host:port or turn:user:password@host:port")
        if "@" in rest:
            credentials, _, where = rest.rpartition("@")
            username, _, password = credentials.partition(":")
            servers.append(
                {"urls": f"{scheme}:{where}", "username": unquote(username), "credential": unquote(password)}
            )
        else:
            servers.append({"urls": raw})
    return servers


@dataclass(eq=False)
class Peer:
    id: str
    actor: Actor
    who: dict[str, Any]
    ws: web.WebSocketResponse

    def public(self) -> dict[str, Any]:
        return {"peer_id": self.id, **self.who}


@dataclass
class Rooms:
    """The sessions open in this process: request id -> peers present."""

    rooms: dict[int, dict[str, Peer]] = field(default_factory=dict)

    def join(self, request_id: int, peer: Peer) -> list[Peer]:
        room = self.rooms.setdefault(request_id, {})
        others = list(room.values())
        room[peer.id] = peer
        return others

    def leave(self, request_id: int, peer: Peer) -> list[Peer]:
        room = self.rooms.get(request_id, {})
        room.pop(peer.id, None)
        if not room:
            self.rooms.pop(request_id, None)
        return list(room.values())

    def peer(self, request_id: int, peer_id: str) -> Peer | None:
        return self.rooms.get(request_id, {}).get(peer_id)


async def evict(app: web.Application, request_id: int, username: str, reason: str) -> int:
    """Close the session sockets of a participant who was just removed, with the reason (4403); how many.
    Other hub processes notice at the participant's next signal (``live_session.still_allowed``)."""
    room = rooms_of(app).rooms.get(request_id, {})
    gone = [peer for peer in list(room.values()) if peer.actor.username == username]
    for peer in gone:
        await peer.ws.close(code=CLOSE_FORBIDDEN, message=reason[:120].encode())
    return len(gone)


def rooms_of(app: web.Application) -> Rooms:
    """This process's sessions, kept in the app's mutable ``EXTRA`` dict (no app-state change after start)."""
    rooms: Rooms = app[EXTRA].setdefault("consultation_rooms", Rooms())
    return rooms


async def _broadcast(peers: list[Peer], message: dict[str, Any]) -> None:
    for other in peers:
        if not other.ws.closed:
            try:
                await other.ws.send_json(message)
            except ConnectionError:
                log.info("session peer %s went away during a broadcast", other.id)


@routes.add(
    "GET",
    "/api/v1/consultations/{id}/ws",
    summary="A consultation's live session (WebSocket): presence and WebRTC signalling; authenticate with "
    'Authorization, the console cookie or a first message {"action": "auth", "token": ...}; never in the URL',
    tag="consultations",
    roles="whoever may see the consultation (requesting side, center readers, invited participants)",
    responses={"101": "switching protocols", "403": "outside scope", "404": "no such request"},
)
async def session_socket(request: web.Request) -> web.WebSocketResponse:
    refuse_credentials_in_url(request)
    hub = hub_of(request)
    rid = request_id(request)
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=MAX_SIGNAL_BYTES)
    actor: Actor | None = request.get(ACTOR)
    if actor is not None:  # Authorization or the console cookie: a refusal is the handshake's status
        who = await live_session.join(hub, actor, rid)
        await ws.prepare(request)
    else:  # a page that holds a token authenticates with its first message; a refusal closes with the reason
        await ws.prepare(request)
        _token, actor = await first_message_auth(hub, ws, request.remote)
        if actor is None:
            return ws
        try:
            who = await live_session.join(hub, actor, rid)
        except TelenetError as exc:
            code = CLOSE_FORBIDDEN if isinstance(exc, Forbidden) else CLOSE_UNAUTHORIZED
            await ws.close(code=code, message=f"{exc.code}: {exc.message}"[:120].encode())
            return ws
    rooms = rooms_of(request.app)
    peer = Peer(id=f"{actor.username}#{next(_ids)}", actor=actor, who=who, ws=ws)
    others = rooms.join(rid, peer)
    try:
        await ws.send_json(
            {
                "type": "welcome",
                "peer_id": peer.id,
                "request_id": rid,
                "ice_servers": request.app[EXTRA].get("ice_servers", []),
                "peers": [o.public() for o in others],
            }
        )
        await _broadcast(others, {"type": "presence", "event": "joined", "peer": peer.public()})
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            await _relay(hub, rooms, rid, peer, msg.data)
    finally:
        remaining = rooms.leave(rid, peer)
        await _broadcast(remaining, {"type": "presence", "event": "left", "peer": peer.public()})
    return ws


async def _relay(hub: Any, rooms: Rooms, rid: int, peer: Peer, data: str) -> None:
    try:
        message = json.loads(data)
    except ValueError:
        await peer.ws.send_json({"type": "error", "detail": "messages are JSON objects"})
        return
    if not isinstance(message, dict) or message.get("type") != "signal" or not isinstance(message.get("data"), dict):
        await peer.ws.send_json({"type": "error", "detail": 'send {"type": "signal", "to": <peer id>, "data": {...}}'})
        return
    target = rooms.peer(rid, str(message.get("to")))
    if target is None:
        await peer.ws.send_json({"type": "error", "detail": f"no peer {message.get('to')!r} in this session"})
        return
    if not await live_session.still_allowed(hub, peer.actor, rid):
        await peer.ws.send_json({"type": "error", "detail": "you are no longer a participant of this consultation"})
        await peer.ws.close(code=CLOSE_FORBIDDEN, message=b"participant-removed: no longer a participant")
        return
    await target.ws.send_json({"type": "signal", "from": peer.id, "data": message["data"]})


@routes.add(
    "GET",
    "/consultation/{name}",
    summary="The consultation session page (a small WebRTC client of the hub's signalling)",
    tag="consultations",
    public=True,
)
async def session_page(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _PAGES:
        raise web.HTTPNotFound()
    return web.Response(
        body=(_STATIC / name).read_bytes(),
        content_type=_PAGES[name],
        charset="utf-8",
        headers={"Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:"},
    )
