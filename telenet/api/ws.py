"""The live channel: ``WS /api/v1/ws``. Subscribers get the events of the topics they may see; with
``since`` they first get what they missed, in order, so a dropped connection loses nothing.

One broker task reads new events from the event table (the truth) when a commit wakes it, or every
``poll_interval`` seconds for commits it was not told about, and fans them out to per-connection queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from sqlalchemy.ext.asyncio import AsyncConnection

from telenet.api.context import ACTOR, EXTRA, HUB, hub_of
from telenet.api.middleware import SESSION_COOKIE, bearer_token
from telenet.api.spec import Routes
from telenet.domain.access import Actor
from telenet.domain.errors import Invalid, Unauthorized
from telenet.services import auth, events
from telenet.services.events import PublishedEvent
from telenet.services.hub import Hub
from telenet.waits import woken

log = logging.getLogger(__name__)
routes = Routes()

QUEUE_LIMIT = 10_000


@dataclass(eq=False)
class Subscriber:
    """One connection: its topics, the id of the last event it was sent, and its inbox."""

    actor: Actor
    topics: set[str] = field(default_factory=set)
    cursor: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    queue: asyncio.Queue[PublishedEvent | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    # The connection, for the broker's direct sends (see Broker.pump); None: everything goes through the queue.
    ws: web.WebSocketResponse | None = None
    transport: asyncio.BaseTransport | None = None
    # Set by the broker after an event that may take a request out of this subscriber's scope: the watcher
    # re-authorizes the topics at once, and nothing more is sent until it has (``cleared`` set again).
    recheck: asyncio.Event = field(default_factory=asyncio.Event)
    cleared: asyncio.Event = field(default_factory=asyncio.Event)
    watched: bool = False
    # How many times the watcher has re-authorized the topics (tests wait on it).
    topic_checks: int = 0

    def __post_init__(self) -> None:
        self.cleared.set()

    def hold_for_recheck(self) -> None:
        if self.watched:
            self.cleared.clear()
            self.recheck.set()

    def topic_of(self, event: PublishedEvent) -> str | None:
        return next((t for t in event.topics if t in self.topics), None)


class Broker:
    """Fans events out to subscribers; one per process."""

    def __init__(self, hub: Hub, poll_interval: float = 1.0) -> None:
        self.hub = hub
        self.poll_interval = poll_interval
        self.last_id = 0
        self.subscribers: weakref.WeakSet[Subscriber] = weakref.WeakSet()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listen_conn: AsyncConnection | None = None
        self.audit = events.DeliveryAudit(hub)

    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        self.last_id = await events.last_event_id(self.hub)
        self.hub.on_commit.append(self.wake)
        await self._listen()
        self._task = asyncio.create_task(self._run(), name="event-broker")

    async def _listen(self) -> None:
        """On PostgreSQL, LISTEN for commits of other hub processes (a wake-up only: a lost notification
        costs at most ``poll_interval``, because the event table is read either way)."""
        engine = self.hub.engine
        if engine is None or engine.dialect.name != "postgresql":
            return
        try:
            self._listen_conn = await engine.connect()
            raw = await self._listen_conn.get_raw_connection()
            driver: Any = raw.driver_connection  # asyncpg's Connection
            await driver.add_listener(events.EVENTS_CHANNEL, lambda *_: self.wake())
        except Exception:
            log.exception("LISTEN %s failed; falling back to polling", events.EVENTS_CHANNEL)

    async def stop(self) -> None:
        if self._listen_conn is not None:
            with contextlib.suppress(Exception):
                await self._listen_conn.close()
        with contextlib.suppress(ValueError):
            self.hub.on_commit.remove(self.wake)
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.audit.drain()

    async def _run(self) -> None:
        while True:
            await woken(self._wake, self.poll_interval)
            self._wake.clear()
            try:
                await self.pump()
            except Exception:  # a failing poll must not end the live channel; the next wake retries
                log.exception("event broker poll failed")
                await asyncio.sleep(self.poll_interval)

    async def pump(self) -> None:
        while True:
            batch = await events.latest_events(self.hub, self.last_id)
            if not batch:
                return
            if self.hub.pages is not None:  # events of other hub processes change pages too
                self.hub.pages.clear()
            for event in batch:
                frames: dict[str, bytes] = {}  # encoded once per topic, the same bytes for every subscriber
                for sub in list(self.subscribers):
                    topic = sub.topic_of(event)
                    if topic is not None:
                        frame = frames.get(topic)
                        if frame is None:
                            frame = frames[topic] = event.encoded(topic).encode()
                        if await _send_direct(sub, event, frame):
                            self.audit.delivered(sub.actor, event, topic)
                            if event.name in SCOPE_EVENTS:
                                sub.hold_for_recheck()
                            await _revoke(sub, event)
                            continue
                        try:
                            sub.queue.put_nowait(event)
                        except asyncio.QueueFull:  # a stuck client is dropped; it can reconnect with since
                            while not sub.queue.empty():
                                sub.queue.get_nowait()
                            sub.queue.put_nowait(None)
                            self.subscribers.discard(sub)
                        await _revoke(sub, event)
                self.last_id = event.id


# Events after which a subscriber may no longer see the request (it went to another center, its claim
# ended): its topics are re-authorized before anything more is sent to it.
SCOPE_EVENTS = frozenset(
    {
        "request.escalated",
        "request.reassigned",
        "request.released",
        "request.claim_released",
        "request.lease_expired",
        "request.breach_release",
        "request.returned",
        "request.cancelled",
    }
)


async def _revoke(sub: Subscriber, event: PublishedEvent) -> None:
    """An event that ends someone's access (a participant removed from a consultation) carries ``revoke``:
    that user's subscriptions to those topics end at once, in every hub process, with the reason; a
    connection left with no topic is closed (4403)."""
    revoke = event.data.get("revoke")
    if not isinstance(revoke, dict) or revoke.get("user_id") != sub.actor.user_id:
        return
    dropped = sorted(sub.topics.intersection(revoke.get("topics") or ()))
    if not dropped or sub.ws is None:
        return
    sub.topics.difference_update(dropped)
    detail = str(revoke.get("detail") or "access ended")
    with contextlib.suppress(ConnectionError, RuntimeError):
        for topic in dropped:
            await sub.ws.send_json(_error(detail, topic=topic, code=revoke.get("code") or "access-ended"))
        if not sub.topics:
            await sub.ws.close(code=CLOSE_FORBIDDEN, message=f"{revoke.get('code')}: {detail}"[:120].encode())


# A subscriber whose socket buffer holds more than this is sent to through its queue (and its own task), so
# that one slow client never makes the broker wait.
DIRECT_SEND_MAX_BUFFERED = 256 * 1024


async def _send_direct(sub: Subscriber, event: PublishedEvent, frame: bytes) -> bool:
    """Hand the frame to the subscriber's socket in the broker's own task (no task switch per client: the
    write only buffers) when nothing is queued or replaying for it; False when it must go through the queue."""
    ws, transport = sub.ws, sub.transport
    if ws is None or not isinstance(transport, asyncio.WriteTransport) or ws.closed or transport.is_closing():
        return False
    if sub.lock.locked() or not sub.queue.empty() or event.id <= sub.cursor or not sub.cleared.is_set():
        return False
    if transport.get_write_buffer_size() > DIRECT_SEND_MAX_BUFFERED:
        return False
    try:
        await ws.send_frame(frame, WSMsgType.TEXT)
    except (ConnectionError, RuntimeError):
        return False
    sub.cursor = event.id
    return True


BROKER = web.AppKey("broker", Broker)


async def broker_ctx(app: web.Application) -> AsyncIterator[None]:
    broker = Broker(app[HUB])
    app[BROKER] = broker
    await broker.start()
    yield
    await broker.stop()


SOCKETS: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey("websockets")


async def close_sockets_ctx(app: web.Application) -> AsyncIterator[None]:
    sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
    app[SOCKETS] = sockets
    yield
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


def _error(detail: str, **extra: Any) -> dict[str, Any]:
    return {"type": "error", "detail": detail, **extra}


# How long a new connection may take to send its {"action": "auth"} message.
AUTH_TIMEOUT_SECONDS = 10.0
# Application close codes (RFC 6455 leaves 4000-4999 to applications), after HTTP's 401 and 403.
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
# How often an open connection re-checks its token (revoked, expired, scope changed): the app's
# EXTRA["ws_recheck_seconds"] overrides it; topics are re-authorized on a scope change and every
# TOPIC_RECHECK_EVERY checks (a request escalated away from the reader's centers).
RECHECK_SECONDS = 5.0
TOPIC_RECHECK_EVERY = 6


@routes.add(
    "GET",
    "/api/v1/ws",
    summary='Live events (WebSocket); authenticate with Authorization or the first message {"action": "auth", '
    '"token": ...}; never in the URL',
    tag="live",
    responses={"101": "switching protocols", "422": "a credential in the URL"},
)
async def websocket(request: web.Request) -> web.WebSocketResponse:
    refuse_credentials_in_url(request)
    hub = hub_of(request)
    broker = request.app[BROKER]
    # No permessage-deflate: it compresses every frame again for every subscriber (a zlib stream per
    # connection), which undoes "encoded once per topic" and was a third of a 5,000-subscriber fan-out.
    ws = web.WebSocketResponse(heartbeat=30, compress=False)
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    # A console session's cookie is re-checked like a bearer token (revocation ends both).
    token = bearer_token(request) or request.cookies.get(SESSION_COOKIE)
    actor: Actor | None = request.get(ACTOR)
    if actor is None:
        token, actor = await first_message_auth(hub, ws, request.remote)
        if actor is None:
            return ws
    sub = Subscriber(actor, ws=ws, transport=request.transport)
    forwarder: asyncio.Task[None] | None = None
    interval = float(request.app[EXTRA].get("ws_recheck_seconds", RECHECK_SECONDS))
    sub.watched = bool(token)
    watcher = asyncio.create_task(_watch(hub, ws, sub, token, request.remote, interval)) if token else None
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            command = _parse(msg.data)
            if isinstance(command, str):
                await ws.send_json(_error(command))
                continue
            topics, since = command
            allowed, refused = await events.authorize_topics(hub, sub.actor, topics)
            for item in refused:
                await ws.send_json(_error(item["detail"], topic=item["topic"], code=item["code"]))
            async with sub.lock:
                new = {t for t in allowed if t not in sub.topics}
                sub.topics.update(new)
                if forwarder is None:
                    # No await between these two lines: the cursor is exactly where the live feed starts.
                    broker.subscribers.add(sub)
                    sub.cursor = broker.last_id
                await ws.send_json({"type": "subscribed", "topics": sorted(sub.topics)})
                if since is not None and new:
                    await _replay(hub, ws, sub, new, since, broker.audit)
            if forwarder is None:
                forwarder = asyncio.create_task(_forward(ws, sub, broker.audit))
    finally:
        broker.subscribers.discard(sub)
        for task in (forwarder, watcher):
            if task is not None:
                task.cancel()
    return ws


def refuse_credentials_in_url(request: web.Request) -> None:
    """A credential in the URL ends up in access logs and browser history: refused (422), never read."""
    if {"token", "access_token"}.intersection(request.query):
        raise Invalid(
            'credentials in the URL are refused; send {"action": "auth", "token": ...} as the first message',
            code="credential-in-url",
        )


async def first_message_auth(
    hub: Hub, ws: web.WebSocketResponse, remote: str | None
) -> tuple[str | None, Actor | None]:
    """Read {"action": "auth", "token": ...}; on failure the connection is closed with the reason."""
    try:
        msg = await ws.receive(timeout=AUTH_TIMEOUT_SECONDS)
    except TimeoutError:
        await ws.close(code=CLOSE_UNAUTHORIZED, message=b"authenticate first: no auth message in time")
        return None, None
    token = None
    if msg.type == WSMsgType.TEXT:
        try:
            command = json.loads(msg.data)
        except ValueError:
            command = None
        if isinstance(command, dict) and command.get("action") == "auth" and isinstance(command.get("token"), str):
            token = command["token"]
    if not token:
        await ws.close(code=CLOSE_UNAUTHORIZED, message=b'authenticate first: {"action": "auth", "token": ...}')
        return None, None
    try:
        actor = await auth.authenticate(hub, token, remote)
    except Unauthorized as exc:
        await ws.close(code=CLOSE_UNAUTHORIZED, message=exc.code.encode())
        return None, None
    await ws.send_json({"type": "authenticated", "username": actor.username})
    return token, actor


async def _watch(
    hub: Hub, ws: web.WebSocketResponse, sub: Subscriber, token: str, remote: str | None, interval: float
) -> None:
    """End the subscription when its token is revoked or expires, or the account's scope no longer covers
    a subscribed topic: the client learns why from the close code and reason."""
    ticks = 0
    while not ws.closed:
        await woken(sub.recheck, interval)
        urgent = sub.recheck.is_set()
        sub.recheck.clear()
        ticks += 1
        try:
            actor = await auth.authenticate(hub, token, remote)
        except Unauthorized as exc:
            sub.topics.clear()
            await ws.close(code=CLOSE_UNAUTHORIZED, message=f"{exc.code}: {exc.message}"[:120].encode())
            return
        except Exception:  # a failed check (database busy) is retried at the next tick
            log.exception("re-checking a live subscription failed")
            continue
        if urgent or actor != sub.actor or ticks % TOPIC_RECHECK_EVERY == 0:
            try:
                refused = await events.recheck_topics(hub, actor, sorted(sub.topics))
            except Exception:
                log.exception("re-authorizing a live subscription failed")
                continue
            sub.actor = actor
            sub.topic_checks += 1
            if refused:
                sub.topics.clear()
                reason = f"scope changed: {refused[0]['topic']} is no longer permitted"
                await ws.close(code=CLOSE_FORBIDDEN, message=reason[:120].encode())
                return
        sub.cleared.set()


def _parse(data: str) -> tuple[list[str], int | None] | str:
    """The subscribe command, or the reason it is not one."""
    try:
        command = json.loads(data)
    except ValueError:
        return "messages are JSON objects"
    if not isinstance(command, dict) or command.get("action") != "subscribe":
        return 'send {"action": "subscribe", "topics": [...], "since": <event id>}'
    topics = command.get("topics")
    since = command.get("since")
    if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
        return "topics is a list of strings"
    if since is not None and (isinstance(since, bool) or not isinstance(since, int) or not 0 <= since < 2**63):
        return "since is a non-negative event id"
    return topics, since


async def _replay(
    hub: Hub, ws: web.WebSocketResponse, sub: Subscriber, new: set[str], since: int, audit: events.DeliveryAudit
) -> None:
    """Send what the client missed on its topics since ``since``, in id order, without repeating what it has."""
    after = since
    while True:
        batch = await events.events_since(hub, sorted(sub.topics), after)
        if not batch:
            break
        for event in batch:
            if event.id > sub.cursor or new.intersection(event.topics):
                await _send(ws, event, sub, audit)
            after = event.id
        sub.cursor = max(sub.cursor, after)


async def _send(ws: web.WebSocketResponse, event: PublishedEvent, sub: Subscriber, audit: events.DeliveryAudit) -> None:
    for topic in event.topics:
        if topic in sub.topics:
            await ws.send_str(event.encoded(topic))
            audit.delivered(sub.actor, event, topic)
            return


async def _forward(ws: web.WebSocketResponse, sub: Subscriber, audit: events.DeliveryAudit) -> None:
    while not ws.closed:
        event = await sub.queue.get()
        if event is None:
            await ws.close(code=WSCloseCode.TRY_AGAIN_LATER, message=b"too slow; reconnect with since")
            return
        await sub.cleared.wait()  # a scope re-check after the last event is done
        async with sub.lock:
            if event.id <= sub.cursor or ws.closed:
                continue
            await _send(ws, event, sub, audit)
            sub.cursor = event.id
            if event.name in SCOPE_EVENTS:
                sub.hold_for_recheck()
