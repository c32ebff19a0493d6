"""Who may join a consultation's live session (presence, WebRTC signalling): whoever may see the
consultation — the requesting side, the readers of its center, the holder, and its invited participants
while they are invited. Each join is audited."""

from __future__ import annotations

from typing import Any

from telenet.domain.access import Actor
from telenet.domain.errors import Conflict, Invalid
from telenet.domain.lifecycle import Kind
from telenet.services.access import can_see_request, load_request
from telenet.services.hub import Hub, use_case
from telenet.store.models import Request


async def join(hub: Hub, actor: Actor, request_id: int) -> dict[str, Any]:
    """The participant as the session shows it; 403/404 when the actor may not see the consultation."""
    async with use_case(hub, actor, "consultation.session.join", "request", str(request_id)) as uow:
        request = await load_request(uow.session, actor, request_id)
        uow.audit(object_path=request.requesting_path)
        if request.kind != Kind.CONSULTATION.value:
            raise Invalid("only a consultation has a live session", code="not-consultation")
        if request.state == "cancelled":
            raise Conflict(
                "the consultation was cancelled", code="illegal-transition", details={"state": request.state}
            )
        return {
            "username": actor.username,
            "name": actor.display_name or actor.username,
            "institution": actor.institution_code,
            "role": actor.role.value,
        }


async def still_allowed(hub: Hub, actor: Actor, request_id: int) -> bool:
    """Re-checked before relaying: a participant removed from the consultation loses the session."""
    async with hub.reader() as session:
        request = await session.get(Request, request_id)
        return request is not None and await can_see_request(session, actor, request)
