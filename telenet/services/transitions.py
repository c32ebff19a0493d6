"""Applying a lifecycle transition: the domain table decides, one conditional UPDATE makes it so, an event
records it — all in the caller's transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from telenet.domain.errors import Conflict
from telenet.domain.lifecycle import Action, transition
from telenet.services.events import emit, request_topics
from telenet.services.hub import Hub
from telenet.store.models import Request


async def apply(
    hub: Hub,
    session: AsyncSession,
    request: Request,
    action: Action,
    *,
    event: str,
    center_code: str | None,
    institution_code: str,
    data: dict[str, Any] | None = None,
    extra_topics: tuple[str, ...] = (),
    **changes: Any,
) -> Request:
    """Move ``request`` by ``action``; 409 when the state machine forbids it or another writer got there first.

    The UPDATE is conditional on the state and version read, so two concurrent actions can never both win.
    """
    new_state = transition(request.kind, request.state, action)
    await _conditional_update(hub, session, request, state=new_state.value, **changes)
    await _emit(hub, session, request, event, center_code, institution_code, data, extra_topics)
    return request


async def apply_fields(
    hub: Hub,
    session: AsyncSession,
    request: Request,
    center_code: str,
    institution_code: str,
    event: str,
    data: dict[str, Any],
    **changes: Any,
) -> Request:
    """Change fields of a request without a state transition (e.g. consent recorded), with the same
    conditional UPDATE and an event."""
    await _conditional_update(hub, session, request, **changes)
    await _emit(hub, session, request, event, center_code, institution_code, data, ())
    return request


async def _conditional_update(hub: Hub, session: AsyncSession, request: Request, **changes: Any) -> None:
    values = {"version": request.version + 1, "updated_at": hub.clock.now(), **changes}
    result = await session.execute(
        update(Request)
        .where(Request.id == request.id, Request.version == request.version, Request.state == request.state)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        raise Conflict(
            f"request {request.id} was changed by someone else; reload and try again",
            code="concurrent-change",
            details={"state": request.state},
        )
    for key, value in values.items():
        set_committed_value(request, key, value)


async def _emit(
    hub: Hub,
    session: AsyncSession,
    request: Request,
    event: str,
    center_code: str | None,
    institution_code: str,
    data: dict[str, Any] | None,
    extra_topics: tuple[str, ...],
) -> None:
    payload = summary(request, center_code)
    payload.update(data or {})
    topics = [*request_topics(request.id, center_code, institution_code), *extra_topics]
    await emit(session, hub, event, topics, payload, request_id=request.id)


def summary(request: Request, center_code: str | None) -> dict[str, Any]:
    """What an event says about a request: ids and states, never patient data (clients fetch that, audited)."""
    return {
        "request_id": request.id,
        "accession_number": request.accession_number,
        "kind": request.kind,
        "priority": request.priority,
        "state": request.state,
        "center": center_code,
        "due_at": request.due_at.isoformat() if request.due_at else None,
    }
