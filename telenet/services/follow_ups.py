"""Follow-up work of one use case, run inside its transaction and wired once in the composition root
(``telenet.app.make_hub``), so that the services that cause it and the services that do it never import
each other: routed → forwarding of present studies; final report → fee line and ORU outbox; a complete
study → the request's data-complete command."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from telenet.domain.access import Actor
from telenet.store.models import Center, Report, Request

if TYPE_CHECKING:
    from telenet.services.hub import Hub

Routed = Callable[["Hub", AsyncSession, Request, Center], Awaitable[None]]
Finalized = Callable[["Hub", AsyncSession, Request, Report], Awaitable[Any]]
DataComplete = Callable[["Hub", Actor, int, str], Awaitable[Any]]


async def _no_data_complete(_hub: Hub, _actor: Actor, _request_id: int, _signal: str) -> None:
    raise RuntimeError("no data-complete command is wired (telenet.app.make_hub wires it)")


@dataclass
class FollowUps:
    """The listeners; each list runs in order, in the caller's transaction (a failure fails the command)."""

    on_routed: list[Routed] = field(default_factory=list)
    on_final: list[Finalized] = field(default_factory=list)
    data_complete: DataComplete = _no_data_complete

    async def routed(self, hub: Hub, session: AsyncSession, request: Request, center: Center) -> None:
        for listener in self.on_routed:
            await listener(hub, session, request, center)

    async def finalized(self, hub: Hub, session: AsyncSession, request: Request, report: Report) -> None:
        for listener in self.on_final:
            await listener(hub, session, request, report)
