"""Reading queues: worklist, exclusive leased claims, release, return, escalation, and the sweeps that
expire leases and escalate SLA breaches."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from telenet.domain.access import Actor, Role
from telenet.domain.errors import Conflict, Forbidden, Invalid
from telenet.domain.lifecycle import Action, ReturnReason
from telenet.domain.routing import RouteQuery
from telenet.domain.sla import remaining
from telenet.domain.tiers import Tier
from telenet.services import routing
from telenet.services.access import center_by_code, center_of, load_for_action, require_center_staff, require_role
from telenet.services.coordination import breach_alerted, capped_lease, release_at
from telenet.services.events import emit
from telenet.services.hub import Hub, read_use_case, use_case
from telenet.services.page_cache import Page, PageCache
from telenet.services.request_views import committed_view
from telenet.services.requests import due_for
from telenet.services.transitions import apply, summary
from telenet.store.models import Center, Institution, Patient, Request, User

SYSTEM = "system"


# The worklist's columns: only what a row shows (no ORM entities to build, no large columns to fetch).
_WORKLIST_COLUMNS = (
    Request.id,
    Request.accession_number,
    Request.kind,
    Request.priority,
    Request.state,
    Request.due_at,
    Request.modality,
    Request.body_part,
    Request.clinical_question,
    Request.queued_at,
    Request.ordered_at,
    Request.claim_expires_at,
    Patient.name,
    Patient.sex,
    Patient.birth_date,
    User.username,
    Institution.name,
)


# Built once: constructing the statement per request cost more than running it.
_WORKLIST_PAGE = (
    select(*_WORKLIST_COLUMNS)
    .join(Patient, Patient.id == Request.patient_id)
    .join(Institution, Institution.id == Request.requesting_institution_id)
    .outerjoin(User, User.id == Request.claimed_by_id)
    .where(Request.center_id == bindparam("center_id"), Request.state.in_(routing.ACTIVE_STATES))
    .order_by(Request.priority_rank, Request.due_at, Request.id)
    .limit(bindparam("limit"))
    .offset(bindparam("offset"))
)


async def worklist(
    hub: Hub,
    actor: Actor,
    center_code: str,
    *,
    limit: int = 50,
    offset: int = 0,
    only: Sequence[int] | None = None,
) -> Page:
    """Queued and claimed items of one center, most urgent first (priority, then due time); ``only`` keeps
    the items among those request ids (what a live page fetches when they change). The center from the
    registry snapshot, the page in one query of the columns it shows, on a read session."""
    async with read_use_case(hub, actor, "worklist.read", "center", center_code, single_statement=True) as uow:
        found = (await hub.registry.get()).center_by_code(center_code) if hub.registry is not None else None
        center, inst = found if found is not None else await center_by_code(uow.session, center_code)
        uow.audit(object_path=inst.path)
        require_role(actor, Role.READER, Role.COORDINATOR, action="read a worklist")
        if center.code not in actor.center_codes:
            raise Forbidden(f"{center.code} is not one of your centers", code="scope")
        now = hub.clock.now()
        pages = hub.pages if only is None else None
        key = PageCache.key(now, center.code, limit, offset)
        page = pages.get(key) if pages is not None else None
        if page is not None:
            uow.audit(detail={"count": len(page["items"])})
            return cast(Page, page).for_reader()
        generation = pages.generation if pages is not None else 0
        rows = (
            await uow.session.execute(_WORKLIST_PAGE, {"center_id": center.id, "limit": limit, "offset": offset})
            if only is None
            else await uow.session.execute(
                _WORKLIST_PAGE.where(Request.id.in_(list(only))),
                {"center_id": center.id, "limit": limit, "offset": offset},
            )
        ).all()
        code = center.code
        items = []
        for (
            request_id,
            accession,
            kind,
            priority,
            state,
            due_at,
            modality,
            body_part,
            question,
            queued_at,
            ordered_at,
            claim_expires_at,
            name,
            sex,
            birth,
            claimed_by,
            requester,
        ) in rows:
            waiting_from = queued_at or ordered_at
            items.append(
                {
                    # summary() of the request, as its events say it
                    "request_id": request_id,
                    "accession_number": accession,
                    "kind": kind,
                    "priority": priority,
                    "state": state,
                    "center": code,
                    "due_at": due_at.isoformat() if due_at else None,
                    "modality": modality,
                    "body_part": body_part,
                    "clinical_question": question,
                    "patient_name": name,
                    "patient_sex": sex,
                    "patient_birth_date": birth.isoformat() if birth else None,
                    "requesting_institution": requester,
                    "queued_at": queued_at.isoformat() if queued_at else None,
                    "waiting_minutes": round((now - waiting_from).total_seconds() / 60, 1),
                    "sla_remaining_minutes": (
                        round(remaining(due_at, now).total_seconds() / 60, 1) if due_at else None
                    ),
                    "claimed_by": claimed_by,
                    "claim_expires_at": claim_expires_at.isoformat() if claim_expires_at else None,
                }
            )
        uow.audit(detail={"count": len(items)})
        page = Page(
            {
                "center": code,
                "items": items,
                "limit": limit,
                "offset": offset,
                "next_offset": offset + limit if len(items) == limit else None,
            }
        )
        if pages is not None:
            pages.put(key, generation, page)
        return page.for_reader()


async def claim(hub: Hub, actor: Actor, request_id: int) -> dict[str, Any]:
    """Take a request for reading; exclusive and leased. Claiming again by the holder renews the lease."""
    async with use_case(hub, actor, "request.claim", "request", str(request_id)) as uow:
        request, center, inst_code = await load_for_action(uow, actor, request_id)
        require_center_staff(actor, center, action="claim", coordinators=False)
        if request.state == "claimed" and request.claimed_by_id != actor.user_id:
            raise Conflict(
                f"request {request_id} is already claimed by someone else",
                code="already-claimed",
                details={"state": request.state},
            )
        now = hub.clock.now()
        renew = request.state == "claimed"
        await apply(
            hub,
            uow.session,
            request,
            Action.CLAIM,
            event="request.claim_renewed" if renew else "request.claimed",
            center_code=center.code,
            institution_code=inst_code,
            data={"by": actor.username},
            claimed_by_id=actor.user_id,
            claimed_at=request.claimed_at if renew else now,
            # Never past the breach release: renewing cannot hold a breached request.
            claim_expires_at=capped_lease(
                hub, request, now, request.claimed_at if renew and request.claimed_at else now
            ),
        )
        return await committed_view(uow, actor, request)


async def release(hub: Hub, actor: Actor, request_id: int) -> dict[str, Any]:
    """Give a claimed request back to the queue (its holder, or a coordinator of the center)."""
    async with use_case(hub, actor, "request.release", "request", str(request_id)) as uow:
        request, center, inst_code = await load_for_action(uow, actor, request_id)
        require_center_staff(actor, center, action="release")
        if actor.role is Role.READER and request.claimed_by_id not in (None, actor.user_id):
            raise Forbidden("only the holder or a coordinator may release a claim", code="not-holder")
        await apply(
            hub,
            uow.session,
            request,
            Action.RELEASE,
            event="request.released",
            center_code=center.code,
            institution_code=inst_code,
            data={"by": actor.username},
            claimed_by_id=None,
            claim_expires_at=None,
        )
        return await committed_view(uow, actor, request)


async def return_request(hub: Hub, actor: Actor, request_id: int, reason: str, note: str | None) -> dict[str, Any]:
    """Send back what cannot be read (bad image quality, wrong patient, missing data); a consultation is
    declined the same way, with a reason."""
    try:
        reason_code = ReturnReason(reason)
    except ValueError:
        raise Invalid(f"unknown return reason {reason!r}", code="bad-reason") from None
    async with use_case(hub, actor, "request.return", "request", str(request_id)) as uow:
        request, center, inst_code = await load_for_action(uow, actor, request_id)
        require_center_staff(actor, center, action="return", coordinators=False)
        _require_holder(actor, request)
        await apply(
            hub,
            uow.session,
            request,
            Action.RETURN,
            event="request.returned",
            center_code=center.code,
            institution_code=inst_code,
            data={"reason": reason_code.value, "note": note},
            returned_at=hub.clock.now(),
            return_reason=reason_code.value,
            return_note=note,
            claimed_by_id=None,
            claim_expires_at=None,
        )
        return await committed_view(uow, actor, request)


def _require_holder(actor: Actor, request: Request) -> None:
    if request.state == "claimed" and request.claimed_by_id != actor.user_id:
        raise Forbidden("only the reader holding the claim may do this", code="not-holder")


async def escalate(hub: Hub, actor: Actor, request_id: int, reason: str) -> dict[str, Any]:
    """Re-route to the best center of a strictly higher tier (readers and coordinators of the current one)."""
    async with use_case(hub, actor, "request.escalate", "request", str(request_id)) as uow:
        request, center, inst_code = await load_for_action(uow, actor, request_id)
        require_center_staff(actor, center, action="escalate")
        if actor.role is Role.READER:
            _require_holder(actor, request)
        moved = await _escalate(hub, uow.session, request, center, inst_code, reason, actor.username)
        if not moved:
            await uow.commit()  # the alert and its route step stand even though the escalation did not happen
            raise Conflict(
                f"no center above {center.code} can take this request; its coordinators were alerted",
                code="no-higher-center",
            )
        return await committed_view(uow, actor, request)


async def _escalate(
    hub: Hub, session: AsyncSession, request: Request, center: Center, inst_code: str, reason: str, by: str
) -> bool:
    """Move to a higher tier and return True, or alert the current center's coordinators and return False."""
    from telenet.domain.lifecycle import transition

    transition(request.kind, request.state, Action.ESCALATE)  # 409 before anything else when illegal
    center_row, center_inst = await center_of(session, center.id)
    requester = await session.get(Institution, request.requesting_institution_id)
    assert requester is not None
    query = RouteQuery(
        kind=request.kind,
        modality=request.modality,
        body_part=request.body_part,
        subspecialty=request.subspecialty,
        priority=request.priority,
        requester_code=requester.code,
        requester_path=requester.path,
        requester_tier=Tier(requester.tier),
        above_tier=Tier(center_inst.tier),
        exclude=frozenset({center_row.code}),
    )
    decision = await routing.decide(hub, session, query, requester)
    now = hub.clock.now()
    if decision.center_code is None:
        decision_text = f"escalation ({reason}) found no center above {center.code}: {decision.reason}"
        from telenet.domain.routing import RouteDecision

        await routing.record(
            hub,
            session,
            request.id,
            "alert",
            RouteDecision(None, decision_text, decision.considered),
            None,
            center.id,
            by,
        )
        await emit(
            session,
            hub,
            "request.escalation_failed",
            [f"worklist:{center.code}", f"request:{request.id}"],
            {
                **summary(request, center.code),
                "reason": reason,
                "alert": "coordinators",
                "detail": decision.reason,
            },
            request_id=request.id,
        )
        return False
    new_center_id = await routing.center_id_by_code(session, decision.center_code)
    new_center, _ = await center_of(session, new_center_id)
    await routing.record(hub, session, request.id, "escalate", decision, new_center_id, center.id, by)
    await apply(
        hub,
        session,
        request,
        Action.ESCALATE,
        event="request.escalated",
        center_code=new_center.code,
        institution_code=inst_code,
        extra_topics=(f"worklist:{center.code}",),
        data={"from_center": center.code, "reason": reason},
        center_id=new_center_id,
        claimed_by_id=None,
        claim_expires_at=None,
        escalations=request.escalations + 1,
        # queued_at keeps the first time it was queued (turnaround); the SLA restarts at the new center.
        due_at=(due_for(now, request, new_center.sla_minutes) if request.queued_at else None),
    )
    await hub.follow_ups.routed(hub, session, request, new_center)
    return True


async def expire_leases(hub: Hub, now: datetime | None = None) -> int:
    """Return every claim whose lease ran out without a report to its queue; one transaction per request."""
    now = now or hub.clock.now()
    async with hub.sessions() as session:
        ids = (
            (
                await session.execute(
                    select(Request.id).where(Request.state == "claimed", Request.claim_expires_at < now).limit(500)
                )
            )
            .scalars()
            .all()
        )
    done = 0
    for request_id in ids:
        async with use_case(hub, None, "request.lease_expired", "request") as uow:
            request = await uow.session.get(Request, request_id)
            if (
                request is None
                or request.state != "claimed"
                or request.claim_expires_at is None
                or request.claim_expires_at >= now
            ):
                continue
            center, _ = await center_of(uow.session, request.center_id)
            inst_code = (
                await uow.session.execute(
                    select(Institution.code).where(Institution.id == request.requesting_institution_id)
                )
            ).scalar_one()
            try:
                await apply(
                    hub,
                    uow.session,
                    request,
                    Action.LEASE_EXPIRED,
                    event="request.lease_expired",
                    center_code=center.code,
                    institution_code=inst_code,
                    data={"claimed_by_id": request.claimed_by_id},
                    claimed_by_id=None,
                    claim_expires_at=None,
                )
            except Conflict:
                continue
            done += 1
    return done


async def escalate_breaches(hub: Hub, now: datetime | None = None) -> int:
    """At SLA breach: record it, then re-route a queued request up a tier (or alert the coordinators); a
    claimed request stays with its reader and the coordinators are alerted."""
    now = now or hub.clock.now()
    async with hub.sessions() as session:
        ids = (
            (
                await session.execute(
                    select(Request.id)
                    .where(
                        Request.state.in_(routing.ACTIVE_STATES),
                        Request.due_at < now,
                        (Request.breach_handled_at.is_(None)) | (Request.breach_handled_at < Request.due_at),
                    )
                    .limit(500)
                )
            )
            .scalars()
            .all()
        )
    handled = 0
    for request_id in ids:
        async with use_case(hub, None, "request.sla_breach", "request") as uow:
            session = uow.session
            request = await session.get(Request, request_id)
            if (
                request is None
                or request.state not in routing.ACTIVE_STATES
                or request.due_at is None
                or request.due_at >= now
            ):
                continue
            center, _ = await center_of(session, request.center_id)
            inst_code = (
                await session.execute(
                    select(Institution.code).where(Institution.id == request.requesting_institution_id)
                )
            ).scalar_one()
            overdue = int((now - request.due_at) / timedelta(minutes=1))
            request.breach_handled_at = now
            if request.sla_breached_at is None:
                request.sla_breached_at = now
            await session.flush()
            await emit(
                session,
                hub,
                "request.sla_breached",
                [f"worklist:{center.code}", f"request:{request.id}", f"requests:{inst_code}"],
                {
                    **summary(request, center.code),
                    "overdue_minutes": overdue,
                    "alerted": await breach_alerted(session, request),
                    "claim_released_at": (
                        moment.isoformat()
                        if request.state == "claimed"
                        and (moment := release_at(request, hub.options.claim_breach_grace_minutes))
                        else None
                    ),
                },
                request_id=request.id,
            )
            if request.state == "queued":
                await _escalate(
                    hub,
                    session,
                    request,
                    center,
                    inst_code,
                    f"SLA breached at {center.code} ({overdue} min overdue)",
                    SYSTEM,
                )
            handled += 1
    return handled
