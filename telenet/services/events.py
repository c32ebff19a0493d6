"""Events: written in the transaction of the change that causes them, replayed by id, scoped by topic."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from telenet.domain.access import Actor, Role
from telenet.domain.errors import Forbidden, Invalid, NotFound
from telenet.services.hub import Hub, use_case
from telenet.store.models import Center, Event, EventTopic, Institution, Request

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


async def emit(
    session: AsyncSession,
    hub: Hub,
    name: str,
    topics: Iterable[str],
    data: dict[str, Any],
    request_id: int | None = None,
) -> Event:
    """Add an event row (and its topics) to the running transaction."""
    if hub.dialect == "postgresql" and not session.info.get("event_lock"):
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _EVENT_ORDER_LOCK})
        # Delivered at commit to every hub process listening: the wake-up; the event table stays the truth.
        await session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": EVENTS_CHANNEL})
    # Marks the transaction as one that emitted events: its commit wakes the fan-out.
    session.info["event_lock"] = True
    event = Event(at=hub.clock.now(), name=name, request_id=request_id, data=data)
    session.add(event)
    await session.flush()
    for topic in dict.fromkeys(topics):
        session.add(EventTopic(topic=topic, event_id=event.id))
    for listener in hub.event_listeners:
        await listener(session, hub, event)
    return event


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
        # each naming the institution whose data the topic carries.
        try:
            async with use_case(hub, actor, "events.subscribe", "topic", topic) as uow:
                await _authorize(uow.session, actor, topic, lambda path: uow.audit(object_path=path))
            allowed.append(topic)
        except (Forbidden, NotFound, Invalid) as exc:
            refused.append({"topic": topic, "code": exc.code, "detail": exc.message})
    return allowed, refused


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
    """Every event above ``after`` with all its topics (the fan-out's feed)."""
    async with hub.reader() as session:
        ids = (
            (await session.execute(select(Event.id).where(Event.id > after).order_by(Event.id).limit(limit)))
            .scalars()
            .all()
        )
        if not ids:
            return []
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
