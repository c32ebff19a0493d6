"""Critical findings (危急值) when found: raised by any reader holding the request (from the claim, a
preliminary or a signed report), notified to the requesting institution's clinicians (WebSocket) and its HIS
(an ORU with status P through the outbox), a recorded phone step (who called whom, when, the read-back,
复述确认), acknowledged with read-back by the requesting side, escalated while unacknowledged: the
requesting institution's coordinators and admins, then the reading center's coordinators, then one tier
further up each time. Every step is an event on the finding's timeline with its time and people."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telenet.domain.access import Actor, Role
from telenet.domain.errors import Conflict, Forbidden, Invalid, NotFound
from telenet.services import outbox
from telenet.services.access import center_of, load_for_action, load_request, require_requesting_side, require_role
from telenet.services.events import emit, flush_events
from telenet.services.hub import Hub, read_use_case, use_case
from telenet.services.request_views import critical_view
from telenet.services.transitions import summary
from telenet.store.models import (
    Center,
    CriticalCall,
    CriticalFinding,
    Event,
    Institution,
    Report,
    Request,
    User,
    UserCenter,
)

SOURCES = ("claim", "preliminary", "final", "addendum")
_TIMELINE_KEYS = (
    "by",
    "read_back_by",
    "read_back",
    "level",
    "notified",
    "raised_by",
    "caller",
    "callee",
    "callee_role",
    "confirmed",
    "called_at",
    "source",
    "items",
)


def clean_items(items: list[Any] | None) -> list[str]:
    """The critical items as given, stripped, without blanks or repeats; at least one."""
    seen: list[str] = []
    for item in items or []:
        text = str(item).strip()
        if text and text not in seen:
            seen.append(text)
    if not seen:
        raise Invalid("a critical finding names its critical items", code="critical-items-missing")
    return seen


async def items_already_raised(session: AsyncSession, request_id: int) -> set[str]:
    rows = (await session.execute(select(CriticalFinding.items).where(CriticalFinding.request_id == request_id))).all()
    return {str(item) for (items,) in rows for item in items or []}


async def _clinicians(session: AsyncSession, request: Request) -> list[str]:
    """Who is told at once: the requesting clinician, then the other clinicians of the requesting institution."""
    names = (
        (
            await session.execute(
                select(User.username)
                .where(
                    User.institution_id == request.requesting_institution_id,
                    User.role == Role.REQUESTER.value,
                    User.active.is_(True),
                )
                .order_by(User.id != (request.requester_id or 0), User.username)
            )
        )
        .scalars()
        .all()
    )
    return list(names)


async def raise_finding(
    hub: Hub,
    session: AsyncSession,
    request: Request,
    *,
    items: list[str],
    raised_by_id: int,
    raised_by: str,
    center: Center,
    report: Report | None,
    source: str,
    inst_code: str,
) -> CriticalFinding | None:
    """Raise a finding for the items not raised before on this request (none new: nothing happens), notify
    the clinicians and queue the HIS message, all in the caller's transaction."""
    already = await items_already_raised(session, request.id)
    new_items = [i for i in items if i not in already]
    if not new_items:
        return None
    now = hub.clock.now()
    finding = CriticalFinding(
        request_id=request.id,
        report_id=report.id if report is not None else None,
        institution_id=request.requesting_institution_id,
        items=new_items,
        raised_at=now,
        raised_by=raised_by,
        raised_by_id=raised_by_id,
        center_id=center.id,
        source=source,
        deadline_at=now + timedelta(minutes=hub.options.critical_ack_minutes),
        escalation_level=0,
    )
    session.add(finding)
    await session.flush()
    notified = await _clinicians(session, request)
    await emit(
        session,
        hub,
        "critical.raised",
        [f"requests:{inst_code}", f"request:{request.id}", f"worklist:{center.code}"],
        {
            **summary(request, center.code),
            "critical_id": finding.id,
            "items": new_items,
            "deadline_at": finding.deadline_at.isoformat(),
            "raised_by": raised_by,
            "source": source,
            "notified": notified,
        },
        request_id=request.id,
    )
    if source in ("claim", "preliminary"):
        # A signed report or addendum sends its own ORU with the items flagged; before that, this one.
        await outbox.enqueue_critical(hub, session, request, finding, report)
    return finding


async def raise_from_claim(hub: Hub, actor: Actor, request_id: int, body: dict[str, Any]) -> dict[str, Any]:
    """The reader holding the claim raises a critical finding at once, whatever their seniority."""
    items = clean_items(body.get("items"))
    async with use_case(hub, actor, "critical.raise", "request", str(request_id)) as uow:
        session = uow.session
        request, center, inst_code = await load_for_action(uow, actor, request_id)
        require_role(actor, Role.READER, action="raise a critical finding")
        if request.state != "claimed" or request.claimed_by_id != actor.user_id:
            raise Conflict(
                "only the reader holding the claim raises a critical finding; claim the request first",
                code="not-holder",
                details={"state": request.state},
            )
        draft = (
            await session.execute(
                select(Report)
                .where(Report.request_id == request.id, Report.status == "preliminary")
                .order_by(Report.version.desc())
                .limit(1)
            )
        ).scalar_one_or_none()
        finding = await raise_finding(
            hub,
            session,
            request,
            items=items,
            raised_by_id=actor.user_id,
            raised_by=actor.display_name or actor.username,
            center=center,
            report=draft,
            source="preliminary" if draft is not None else "claim",
            inst_code=inst_code,
        )
        if finding is None:
            raise Conflict("these critical items were already raised on this request", code="already-raised")
        uow.audit(detail={"critical_id": finding.id, "items": finding.items})
        return await timeline(session, finding)


async def record_call(hub: Hub, actor: Actor, critical_id: int, body: dict[str, Any]) -> dict[str, Any]:
    """The phone step of 危急值登记: a reader or coordinator of the reading center records whom they called,
    when, what the callee read back (复述) and whether they confirmed it (确认)."""
    read_back = str(body.get("read_back") or "").strip()
    if not read_back:
        raise Invalid("record what the callee read back (复述)", code="read-back-required")
    async with use_case(hub, actor, "critical.call", "critical", str(critical_id)) as uow:
        session = uow.session
        finding = await _finding(session, critical_id)
        request = await session.get(Request, finding.request_id)
        assert request is not None
        uow.audit(object_path=request.requesting_path)
        center_id = finding.center_id or request.center_id
        center, _ = await center_of(session, center_id)
        require_role(actor, Role.READER, Role.COORDINATOR, action="record a critical-finding call")
        if center.code not in actor.center_codes:
            raise Forbidden(f"{center.code} is not one of your centers", code="scope")
        now = hub.clock.now()
        called_at = _aware(body.get("called_at")) or now
        if called_at > now or called_at < finding.raised_at:
            raise Invalid("called_at lies between the finding being raised and now", code="bad-called-at")
        call = CriticalCall(
            critical_id=finding.id,
            called_at=called_at,
            caller_id=actor.user_id,
            caller_name=actor.display_name or actor.username,
            callee_name=str(body["callee"]).strip(),
            callee_role=body.get("callee_role"),
            phone=body.get("phone"),
            read_back=read_back,
            confirmed=bool(body.get("confirmed", False)),
            recorded_at=now,
        )
        session.add(call)
        await session.flush()
        inst_code = await _inst_code(session, request.requesting_institution_id)
        await emit(
            session,
            hub,
            "critical.called",
            [f"requests:{inst_code}", f"request:{request.id}", f"worklist:{center.code}"],
            {
                **summary(request, center.code),
                "critical_id": finding.id,
                "caller": actor.username,
                "callee": call.callee_name,
                "callee_role": call.callee_role,
                "called_at": called_at.isoformat(),
                "read_back": read_back,
                "confirmed": call.confirmed,
            },
            request_id=request.id,
        )
        return await timeline(session, finding)


async def acknowledge(hub: Hub, actor: Actor, critical_id: int, body: dict[str, Any]) -> dict[str, Any]:
    """The requesting side confirms it received the finding: who read it back and what (回读), required."""
    read_back = str(body.get("read_back") or "").strip()
    read_back_by = str(body.get("read_back_by") or "").strip()
    async with use_case(hub, actor, "critical.ack", "critical", str(critical_id)) as uow:
        session = uow.session
        finding = await _finding(session, critical_id)
        request = await session.get(Request, finding.request_id)
        assert request is not None
        uow.audit(object_path=request.requesting_path)
        require_requesting_side(actor, request, action="acknowledge a critical finding")
        if finding.acknowledged_at is not None:
            raise Conflict(
                f"critical finding {critical_id} was acknowledged at "
                f"{finding.acknowledged_at.isoformat()} by {finding.acknowledged_by}",
                code="already-acknowledged",
            )
        if not read_back or not read_back_by:
            raise Invalid(
                "acknowledging a critical finding needs the read-back (回读): who read it back and what they read",
                code="read-back-required",
            )
        now = hub.clock.now()
        finding.acknowledged_at = now
        finding.acknowledged_by_id = actor.user_id
        finding.acknowledged_by = actor.display_name or actor.username
        finding.read_back_by = read_back_by
        finding.read_back = read_back
        await session.flush()
        inst_code = await _inst_code(session, request.requesting_institution_id)
        center, _ = await center_of(session, request.center_id)
        await emit(
            session,
            hub,
            "critical.acknowledged",
            [f"requests:{inst_code}", f"request:{request.id}", f"worklist:{center.code}"],
            {
                **summary(request, center.code),
                "critical_id": finding.id,
                "by": actor.username,
                "read_back_by": read_back_by,
                "read_back": read_back,
                "minutes_to_ack": round((now - finding.raised_at).total_seconds() / 60, 1),
            },
            request_id=request.id,
        )
        return await timeline(session, finding)


async def get(hub: Hub, actor: Actor, critical_id: int) -> dict[str, Any]:
    async with read_use_case(hub, actor, "critical.read", "critical", str(critical_id)) as uow:
        finding = await _finding(uow.session, critical_id)
        await load_request(uow.session, actor, finding.request_id, uow=uow)
        return await timeline(uow.session, finding)


async def timeline(session: AsyncSession, finding: CriticalFinding) -> dict[str, Any]:
    """The finding with every step (raised, called, escalated, acknowledged), oldest first."""
    await flush_events(session)  # events emitted in this transaction are read back below
    events = (
        (
            await session.execute(
                select(Event)
                .where(Event.request_id == finding.request_id, Event.name.like("critical.%"))
                .order_by(Event.id)
            )
        )
        .scalars()
        .all()
    )
    acknowledger = await session.get(User, finding.acknowledged_by_id) if finding.acknowledged_by_id else None
    view = critical_view(finding, acknowledger.username if acknowledger else None)
    view["timeline"] = [
        {"at": e.at.isoformat(), "event": e.name, **{k: v for k, v in e.data.items() if k in _TIMELINE_KEYS}}
        for e in events
        if e.data.get("critical_id") == finding.id
    ]
    calls = (
        (
            await session.execute(
                select(CriticalCall).where(CriticalCall.critical_id == finding.id).order_by(CriticalCall.id)
            )
        )
        .scalars()
        .all()
    )
    view["calls"] = [
        {
            "called_at": c.called_at.isoformat(),
            "caller": c.caller_name,
            "callee": c.callee_name,
            "callee_role": c.callee_role,
            "phone": c.phone,
            "read_back": c.read_back,
            "confirmed": c.confirmed,
        }
        for c in calls
    ]
    return view


async def escalate_unacknowledged(hub: Hub, now: datetime | None = None) -> int:
    """Findings past their deadline escalate one step each time the deadline passes again."""
    now = now or hub.clock.now()
    async with hub.sessions() as session:
        ids = (
            (
                await session.execute(
                    select(CriticalFinding.id)
                    .where(CriticalFinding.acknowledged_at.is_(None), CriticalFinding.deadline_at < now)
                    .order_by(CriticalFinding.id)
                    .limit(500)
                )
            )
            .scalars()
            .all()
        )
    done = 0
    for finding_id in ids:
        async with use_case(hub, None, "critical.escalate", "critical", str(finding_id)) as uow:
            session = uow.session
            finding = await session.get(CriticalFinding, finding_id)
            if finding is None or finding.acknowledged_at is not None or finding.deadline_at >= now:
                continue
            request = await session.get(Request, finding.request_id)
            inst = await session.get(Institution, finding.institution_id)
            assert request is not None and inst is not None
            finding.escalation_level += 1
            finding.deadline_at = now + timedelta(minutes=hub.options.critical_ack_minutes)
            center_id = finding.center_id or request.center_id
            notified = await escalation_targets(session, inst, center_id, finding.escalation_level)
            await session.flush()
            center, _ = await center_of(session, center_id)
            await emit(
                session,
                hub,
                "critical.escalated",
                [f"requests:{inst.code}", f"request:{request.id}", f"worklist:{center.code}"],
                {
                    **summary(request, center.code),
                    "critical_id": finding.id,
                    "level": finding.escalation_level,
                    "notified": notified,
                    "deadline_at": finding.deadline_at.isoformat(),
                },
                request_id=request.id,
            )
            done += 1
    return done


async def escalation_targets(session: AsyncSession, inst: Institution, center_id: int, level: int) -> list[str]:
    """Level 1: the requesting institution's coordinators and admins; level 2: the reading center's
    coordinators; level 3 and on: coordinators and admins one more tier up the requesting institution's path."""
    if level == 2:
        rows = (
            await session.execute(
                select(User.username)
                .join(UserCenter, UserCenter.user_id == User.id)
                .where(UserCenter.center_id == center_id, User.role == Role.COORDINATOR.value, User.active.is_(True))
                .order_by(User.username)
            )
        ).all()
        return [name for (name,) in rows]
    codes = [c for c in inst.path.split("/") if c]
    up = 1 if level <= 1 else level - 1
    reach = codes[max(0, len(codes) - up) :]
    rows = (
        await session.execute(
            select(User.username)
            .join(Institution, Institution.id == User.institution_id)
            .where(
                Institution.code.in_(reach),
                User.role.in_((Role.COORDINATOR.value, Role.ADMIN.value)),
                User.active.is_(True),
            )
            .order_by(User.username)
        )
    ).all()
    return [name for (name,) in rows]


async def _finding(session: AsyncSession, critical_id: int) -> CriticalFinding:
    finding = await session.get(CriticalFinding, critical_id)
    if finding is None:
        raise NotFound(f"no critical finding {critical_id}")
    return finding


async def _inst_code(session: AsyncSession, institution_id: int) -> str:
    code: str = (await session.execute(select(Institution.code).where(Institution.id == institution_id))).scalar_one()
    return code


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise Invalid("called_at must be an ISO 8601 time", code="bad-called-at") from None
    if moment.tzinfo is None:
        raise Invalid("called_at needs a UTC offset", code="bad-called-at")
    return moment
