"""Events: written in the transaction of the change that causes them, replayed by id, scoped by topic."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from telenet.domain.access import Actor, Role
from telenet.domain.errors import Forbidden, Invalid, NotFound
from telenet.services.hub import AuditRecord, Hub, read_use_case, write_audit
from telenet.store.models import Center, Event, EventTopic, Institution, Request

log = logging.getLogger(__name__)

# One PostgreSQL advisory lock serializes the event-writing part of transactions, so that event ids
# become visible in id order and a reader that has seen id N never later finds a smaller id appear.
_EVENT_ORDER_LOCK = 7_411_001
EVENTS_CHANNEL = "telenet_events"


@dataclass(frozen=True)
class PublishedEvent:
    id: int
    name: str
    topics: tuple[str, ...]
    data: dict[str, Any]
    at: str
    _encoded: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def message(self, topic: str) -> dict[str, Any]:
        return {"type": "event", "id": self.id, "topic": topic, "name": self.name, "at": self.at, "data": self.data}

    def encoded(self, topic: str) -> str:
        """The JSON text of the message on ``topic``, encoded once however many subscribers receive it."""
        text = self._encoded.get(topic)
        if text is None:
            text = self._encoded[topic] = json.dumps(self.message(topic), ensure_ascii=False)
        return text


@dataclass(frozen=True)
class PendingEvent:
    """An event as the listeners inside its transaction see it (its row, and so its id, is written at commit)."""

    name: str
    request_id: int | None
    data: dict[str, Any]
    at: datetime


async def emit(
    session: AsyncSession,
    hub: Hub,
    name: str,
    topics: Iterable[str],
    data: dict[str, Any],
    request_id: int | None = None,
) -> None:
    """Add an event (and its topics) to the running transaction: held in the session and written at commit,
    all of the transaction's events in one multi-row insert and their topics in another."""
    # Marks the transaction as one that emitted events: its commit wakes the fan-out.
    session.info["event_lock"] = True
    session.info[_DIALECT] = hub.dialect
    pending: list[tuple[dict[str, Any], list[str]]] = session.info.setdefault(_PENDING, [])
    at = hub.clock.now()
    row = {"at": at, "name": name, "request_id": request_id, "data": data}
    pending.append((row, list(dict.fromkeys(topics))))
    # What the use case added so far is in the database from here on, as when each event was flushed on its
    # own (reads later in the transaction see it); with nothing pending this issues no statement.
    await session.flush()
    for listener in hub.event_listeners:
        await listener(session, hub, PendingEvent(name, request_id, data, at))


_PENDING = "telenet_pending_events"
_DIALECT = "telenet_dialect"


def _write_pending_events(session: Session) -> None:
    """before_commit: the transaction's events and topics, written last, so that on PostgreSQL the event-order
    lock is held only from here to the commit (with the NOTIFY that wakes every hub process)."""
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    session.flush()
    if session.info.get(_DIALECT) == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(:k), pg_notify(:channel, '')"),
            {"k": _EVENT_ORDER_LOCK, "channel": EVENTS_CHANNEL},
        )
    ids = (
        session.execute(insert(Event).returning(Event.id, sort_by_parameter_order=True), [row for row, _ in pending])
        .scalars()
        .all()
    )
    topic_rows = [{"topic": t, "event_id": i} for i, (_, topics) in zip(ids, pending, strict=True) for t in topics]
    if topic_rows:
        session.execute(insert(EventTopic), topic_rows)


async def flush_events(session: AsyncSession) -> None:
    """Write the transaction's pending events now, for code that reads them back before the commit."""
    if session.info.get(_PENDING):
        await session.run_sync(_write_pending_events)


def _forget_pending_events(session: Session, *_args: Any) -> None:
    session.info.pop(_PENDING, None)


# Registered once for every session (they only act on sessions that emitted events).
if not sa_event.contains(Session, "before_commit", _write_pending_events):
    sa_event.listen(Session, "before_commit", _write_pending_events)
    sa_event.listen(Session, "after_rollback", _forget_pending_events)


def request_topics(request_id: int, center_code: str | None, institution_code: str) -> list[str]:
    topics = [f"request:{request_id}", f"requests:{institution_code}"]
    if center_code:
        topics.append(f"worklist:{center_code}")
    return topics


async def authorize_topics(hub: Hub, actor: Actor, topics: Sequence[str]) -> tuple[list[str], list[dict[str, str]]]:
    """Split the requested topics into those the actor may follow and errors for the others."""
    allowed: list[str] = []
    refused: list[dict[str, str]] = []
    for topic in topics:
        # A subscription is a read of what the topic's events tell: audited like one, refused ones with their code,
        # each naming the institution whose data the topic carries. A read use case: no write lock, its audit row
        # group-committed, so that thousands of live connections re-checking their topics never queue behind (or
        # in front of) the writers.
        try:
            async with read_use_case(hub, actor, "events.subscribe", "topic", topic) as uow:
                await _authorize(uow.session, actor, topic, lambda path: uow.audit(object_path=path))
            allowed.append(topic)
        except (Forbidden, NotFound, Invalid) as exc:
            refused.append({"topic": topic, "code": exc.code, "detail": exc.message})
    return allowed, refused


async def recheck_topics(hub: Hub, actor: Actor, topics: Sequence[str]) -> list[dict[str, str]]:
    """The server's own periodic re-check of topics already followed: the errors for those the actor may no
    longer follow. A topic that still passes writes no audit row (the subscription was audited when made, and
    every event sent on it is audited as delivered; thousands of followers re-checking every 30 s would add a
    row each to the writers' queue for nothing); a refusal is audited as a refused subscription, with its code.
    All topics are read in one read session."""
    refused: list[str] = []
    async with hub.reader() as session:
        for topic in topics:
            try:
                await _authorize(session, actor, topic, lambda _path: None)
            except (Forbidden, NotFound, Invalid):
                refused.append(topic)
    if not refused:
        return []
    _allowed, errors = await authorize_topics(hub, actor, refused)  # audits each refusal
    return errors


async def _authorize(session: AsyncSession, actor: Actor, topic: str, owner: Callable[[str], None]) -> None:
    kind, _, key = topic.partition(":")
    if not key:
        raise Invalid(f"topic {topic!r} is not one of worklist:{{center}}, requests:{{institution}}, request:{{id}}")
    if kind == "worklist":
        row = (
            await session.execute(
                select(Center.code, Institution.path)
                .join(Institution, Institution.id == Center.institution_id)
                .where(Center.code == key)
            )
        ).one_or_none()
        if row is None:
            raise NotFound(f"no center {key!r}")
        owner(row[1])
        if not actor.sees_center(row[0], row[1]):
            raise Forbidden(f"{key} is not one of your centers", code="scope")
    elif kind == "requests":
        path = (await session.execute(select(Institution.path).where(Institution.code == key))).scalar_one_or_none()
        if path is None:
            raise NotFound(f"no institution {key!r}")
        owner(path)
        if not actor.sees_institution(path):
            raise Forbidden(f"{key} is outside your scope", code="scope")
    elif kind == "request":
        try:
            request_id = int(key)
        except ValueError:
            raise Invalid(f"topic {topic!r}: request id must be a number") from None
        from telenet.services.access import can_see_request

        request = await session.get(Request, request_id) if 1 <= request_id < 2**63 else None
        if request is None:
            raise NotFound(f"no request {request_id}")
        owner(request.requesting_path)
        if not await can_see_request(session, actor, request):
            raise Forbidden(f"request {request_id} is outside your scope", code="scope")
    else:
        raise Invalid(f"unknown topic kind {kind!r}")


async def events_since(hub: Hub, topics: Sequence[str], since: int, limit: int = 1000) -> list[PublishedEvent]:
    """Events on any of ``topics`` with an id above ``since``, in id order."""
    if not topics:
        return []
    async with hub.reader() as session:
        rows = (
            await session.execute(
                select(Event, EventTopic.topic)
                .join(EventTopic, EventTopic.event_id == Event.id)
                .where(EventTopic.topic.in_(topics), Event.id > since)
                .order_by(Event.id)
                .limit(limit)
            )
        ).all()
    return _group(rows)


async def latest_events(hub: Hub, after: int, limit: int = 1000) -> list[PublishedEvent]:
    """Every event above ``after`` with all its topics (the fan-out's feed): one statement, no BEGIN."""
    async with hub.reader(single_statement=True) as session:
        ids = select(Event.id).where(Event.id > after).order_by(Event.id).limit(limit).scalar_subquery()
        rows = (
            await session.execute(
                select(Event, EventTopic.topic)
                .join(EventTopic, EventTopic.event_id == Event.id)
                .where(Event.id.in_(ids))
                .order_by(Event.id)
            )
        ).all()
    return _group(rows)


async def last_event_id(hub: Hub) -> int:
    async with hub.reader() as session:
        value = (await session.execute(select(Event.id).order_by(Event.id.desc()).limit(1))).scalar_one_or_none()
    return int(value or 0)


def _group(rows: Sequence[Any]) -> list[PublishedEvent]:
    grouped: dict[int, tuple[Event, list[str]]] = {}
    for event, topic in rows:
        grouped.setdefault(event.id, (event, []))[1].append(topic)
    return [
        PublishedEvent(e.id, e.name, tuple(topics), dict(e.data), e.at.isoformat()) for e, topics in grouped.values()
    ]


def is_staff(actor: Actor) -> bool:
    return actor.role in (Role.READER, Role.COORDINATOR)


# Events whose data carry clinical text (a critical finding's items, a read-back, a consultation message):
# each delivery to a subscriber is a read of patient data, audited like one.
CLINICAL_EVENTS = frozenset({"critical.raised", "critical.called", "critical.acknowledged", "consultation.message"})
_OWNER_CACHE_SIZE = 10_000


class DeliveryAudit:
    """Audits the live channel's deliveries of clinical text: one ``events.deliver`` row per event and
    subscriber, filed under the requesting institution (the patient's) as well as the reader's. Rows of one
    loop turn go to the audit writer together; the fan-out never waits for them."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._pending: list[tuple[Actor, PublishedEvent, str]] = []
        self._task: asyncio.Task[None] | None = None
        # A request's requesting institution never changes: its path is cached.
        self._owners: dict[int, str] = {}

    def delivered(self, actor: Actor, event: PublishedEvent, topic: str) -> None:
        if event.name not in CLINICAL_EVENTS:
            return
        self._pending.append((actor, event, topic))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush(), name="delivery-audit")

    async def drain(self) -> None:
        """Every delivery so far is audited (tests, shutdown)."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def _flush(self) -> None:
        await asyncio.sleep(0)
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._write(batch)
            except Exception:
                log.exception("could not audit %d live deliveries", len(batch))

    async def _write(self, batch: list[tuple[Actor, PublishedEvent, str]]) -> None:
        wanted = {rid for _a, e, _t in batch if isinstance(rid := e.data.get("request_id"), int)} - set(self._owners)
        if wanted:
            async with self.hub.reader() as session:
                rows = (
                    await session.execute(select(Request.id, Request.requesting_path).where(Request.id.in_(wanted)))
                ).all()
            if len(self._owners) > _OWNER_CACHE_SIZE:
                self._owners.clear()
            self._owners.update({int(r[0]): r[1] for r in rows})
        records = []
        for actor, event, topic in batch:
            request_id = event.data.get("request_id")
            record = AuditRecord(
                "events.deliver",
                "event",
                str(event.id),
                self._owners.get(request_id) if isinstance(request_id, int) else None,
                {"name": event.name, "request_id": request_id, "topic": topic},
            )
            records.append(write_audit(self.hub, actor, record, "ok"))
        await asyncio.gather(*records)
