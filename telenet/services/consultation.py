"""Consultations (会诊): the message thread and the participants of a multi-disciplinary session."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from telenet.domain.access import Actor
from telenet.domain.errors import Conflict, Invalid
from telenet.domain.lifecycle import Kind, is_terminal
from telenet.services.access import load_for_action
from telenet.services.events import emit
from telenet.services.hub import Hub, read_use_case, use_case
from telenet.services.requests import add_participant
from telenet.store.models import Message


async def post_message(hub: Hub, actor: Actor, request_id: int, body: str) -> dict[str, Any]:
    """Anyone who may see the consultation may write in its thread until it is closed."""
    if not body.strip():
        raise Invalid("a message needs text", code="empty-message")
    async with use_case(hub, actor, "consultation.message", "request", str(request_id)) as uow:
        request, center, inst_code = await load_for_action(uow, actor, request_id)
        if request.kind != Kind.CONSULTATION.value:
            raise Invalid("only a consultation has a message thread", code="not-consultation")
        if request.state == "cancelled":
            raise Conflict(
                "the consultation was cancelled", code="illegal-transition", details={"state": request.state}
            )
        message = Message(
            request_id=request.id,
            author_id=actor.user_id,
            author_name=actor.display_name or actor.username,
            author_institution=actor.institution_code,
            body=body,
            at=hub.clock.now(),
        )
        uow.session.add(message)
        await uow.session.flush()
        view = message_view(message)
        await emit(
            uow.session,
            hub,
            "consultation.message",
            [f"request:{request.id}", f"requests:{inst_code}", f"worklist:{center.code}"],
            {"request_id": request.id, "message": view, "closed": is_terminal(request.state)},
            request_id=request.id,
        )
        return view


async def list_messages(hub: Hub, actor: Actor, request_id: int) -> dict[str, Any]:
    async with read_use_case(hub, actor, "consultation.messages.read", "request", str(request_id)) as uow:
        request, _, _ = await load_for_action(uow, actor, request_id)
        rows = (
            (await uow.session.execute(select(Message).where(Message.request_id == request.id).order_by(Message.id)))
            .scalars()
            .all()
        )
        return {"items": [message_view(m) for m in rows]}


async def add_participants(hub: Hub, actor: Actor, request_id: int, usernames: list[str]) -> list[str]:
    async with read_use_case(hub, actor, "consultation.participants", "request", str(request_id)) as uow:
        request, _, _ = await load_for_action(uow, actor, request_id)
        for name in usernames:
            await add_participant(uow.session, hub, request, name)
        return usernames


def message_view(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "author": message.author_name,
        "institution": message.author_institution,
        "body": message.body,
        "at": message.at.isoformat(),
    }
