"""Queues a coordinator can run: a claimed request that breaches its SLA alerts its reader and the center's
coordinators, and after a grace its claim is released back to the queue with the reason (renewing the
lease cannot hold it longer); coordinators release a reader's claim or hand the request to a named reader
of the center. Every step is an event (and a hand-over a route step) with its reason and person."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telenet.domain.access import Actor, Role
from telenet.domain.errors import Conflict, Forbidden, Invalid
from telenet.domain.lifecycle import Action
from telenet.domain.sla import lease_until
from telenet.services.access import center_of, load_for_action, require_role
from telenet.services.hub import Hub, use_case
from telenet.services.request_views import request_view
from telenet.services.transitions import apply
from telenet.store.models import Center, Institution, Request, RouteStep, User, UserCenter

SYSTEM = "system"


def release_at(request: Request, grace_minutes: float) -> datetime | None:
    """When a claim on ``request`` ends at the latest: the grace after its due time, or after the claim
    when it was taken already breached; None without a due time."""
    if request.due_at is None:
        return None
    start = max(request.due_at, request.claimed_at) if request.claimed_at else request.due_at
    return start + timedelta(minutes=grace_minutes)


def capped_lease(hub: Hub, request: Request, now: datetime, claimed_at: datetime) -> datetime:
    """The lease of a claim taken or renewed at ``now``: the usual length, never past the breach release."""
    lease = lease_until(now, request.priority, hub.options.lease_minutes)
    if request.due_at is None:
        return lease
    start = max(request.due_at, claimed_at)
    return min(lease, start + timedelta(minutes=hub.options.claim_breach_grace_minutes))


async def center_coordinators(session: AsyncSession, center_id: int) -> list[str]:
    rows = await session.execute(
        select(User.username)
        .join(UserCenter, UserCenter.user_id == User.id)
        .where(UserCenter.center_id == center_id, User.role == Role.COORDINATOR.value, User.active.is_(True))
        .order_by(User.username)
    )
    return list(rows.scalars().all())


async def breach_alerted(session: AsyncSession, request: Request) -> list[str]:
    """Who a breach alerts: the reader holding the claim, then the center's coordinators."""
    holder = (
        (await session.execute(select(User.username).where(User.id == request.claimed_by_id))).scalar_one_or_none()
        if request.claimed_by_id
        else None
    )
    return ([holder] if holder else []) + await center_coordinators(session, request.center_id)


async def release_breached_claims(hub: Hub, now: datetime | None = None) -> int:
    """Release every claim held past its breach grace back to the queue, with the reason."""
    now = now or hub.clock.now()
    grace = timedelta(minutes=hub.options.claim_breach_grace_minutes)
    async with hub.sessions() as session:
        ids = (
            (
                await session.execute(
                    select(Request.id)
                    .where(Request.state == "claimed", Request.due_at < now - grace)
                    .order_by(Request.id)
                    .limit(500)
                )
            )
            .scalars()
            .all()
        )
    done = 0
    for request_id in ids:
        async with use_case(hub, None, "request.breach_release", "request", str(request_id)) as uow:
            request = await uow.session.get(Request, request_id)
            if request is None or request.state != "claimed":
                continue
            deadline = release_at(request, hub.options.claim_breach_grace_minutes)
            if deadline is None or deadline >= now:
                continue
            center, _ = await center_of(uow.session, request.center_id)
            inst_code = await _inst_code(uow.session, request.requesting_institution_id)
            holder = await breach_alerted(uow.session, request)
            try:
                await apply(
                    hub,
                    uow.session,
                    request,
                    Action.RELEASE,
                    event="request.claim_released",
                    center_code=center.code,
                    institution_code=inst_code,
                    data={
                        "by": SYSTEM,
                        "reason": "sla-breach",
                        "note": f"SLA breached and not reported within {hub.options.claim_breach_grace_minutes:g} min",
                        "holder": holder[0] if request.claimed_by_id and holder else None,
                        "alerted": holder,
                    },
                    claimed_by_id=None,
                    claim_expires_at=None,
                )
            except Conflict:
                continue
            done += 1
    return done


async def reassign(hub: Hub, actor: Actor, request_id: int, body: dict[str, Any]) -> dict[str, Any]:
    """A coordinator of the center releases a reader's claim (``to`` null) or hands the request to a named
    reader of the center, with a reason."""
    reason = str(body.get("reason") or "").strip()
    if not reason:
        raise Invalid("a reassignment gives its reason", code="reason-missing")
    target_name = body.get("to")
    async with use_case(hub, actor, "request.reassign", "request", str(request_id)) as uow:
        session = uow.session
        request, center, inst_code = await load_for_action(uow, actor, request_id)
        require_role(actor, Role.COORDINATOR, action="reassign a request")
        if center.code not in actor.center_codes:
            raise Forbidden(f"{center.code} is not one of your centers", code="scope")
        holder = await breach_alerted(session, request) if request.claimed_by_id else []
        previous = holder[0] if holder else None
        now = hub.clock.now()
        if target_name is None:
            if request.state != "claimed":
                raise Conflict("only a claimed request can be released", code="illegal-transition")
            await apply(
                hub,
                session,
                request,
                Action.RELEASE,
                event="request.claim_released",
                center_code=center.code,
                institution_code=inst_code,
                data={"by": actor.username, "reason": "coordinator", "note": reason, "holder": previous},
                claimed_by_id=None,
                claim_expires_at=None,
            )
        else:
            target = (
                await session.execute(
                    select(User)
                    .join(UserCenter, UserCenter.user_id == User.id)
                    .where(
                        User.username == target_name,
                        UserCenter.center_id == center.id,
                        User.role == Role.READER.value,
                        User.active.is_(True),
                    )
                )
            ).scalar_one_or_none()
            if target is None:
                raise Invalid(f"{target_name!r} is not an active reader of {center.code}", code="unknown-reader")
            if request.claimed_by_id == target.id:
                raise Conflict(f"{target_name} already holds the request", code="already-claimed")
            await apply(
                hub,
                session,
                request,
                Action.CLAIM,
                event="request.reassigned",
                center_code=center.code,
                institution_code=inst_code,
                data={"by": actor.username, "from": previous, "to": target.username, "note": reason},
                claimed_by_id=target.id,
                claimed_at=now,
                claim_expires_at=capped_lease(hub, request, now, now),
            )
            session.add(
                RouteStep(
                    request_id=request.id,
                    at=now,
                    action="reassign",
                    from_center_id=center.id,
                    center_id=center.id,
                    reason=f"handed from {previous or 'the queue'} to {target.username}: {reason}",
                    considered=[],
                    actor=actor.username,
                )
            )
            await session.flush()
        uow.audit(detail={"to": target_name, "from": previous, "reason": reason})
        return await request_view(session, actor, request)


async def center_readers(hub: Hub, actor: Actor, center_code: str) -> list[dict[str, Any]]:
    """The active readers of a center a coordinator may hand its requests to (the coordinator's centers only;
    staff names, not patient data)."""
    require_role(actor, Role.COORDINATOR, action="list a center's readers")
    if center_code not in actor.center_codes:
        raise Forbidden(f"{center_code} is not one of your centers", code="scope")
    async with hub.reader() as session:
        rows = await session.execute(
            select(User.username, User.display_name, User.title)
            .join(UserCenter, UserCenter.user_id == User.id)
            .join(Center, Center.id == UserCenter.center_id)
            .where(Center.code == center_code, User.role == Role.READER.value, User.active.is_(True))
            .order_by(User.username)
        )
        return [{"username": u, "display_name": d, "title": t} for u, d, t in rows.all()]


async def _inst_code(session: AsyncSession, institution_id: int) -> str:
    code: str = (await session.execute(select(Institution.code).where(Institution.id == institution_id))).scalar_one()
    return code
