"""Consultations (会诊) as sessions: the time one side proposes and the other agrees, the session, the opinion;
the invited centers and specialists (``consultation_members``); the message thread. Every step is on the
consultation's timeline with its time and person, and an illegal one is a 409 that changes nothing."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from telenet.domain.access import Actor, Role
from telenet.domain.consultation import Phase, Side, Step, allowed_steps, check_agreeing_side, next_phase
from telenet.domain.errors import Conflict, Forbidden, Invalid
from telenet.domain.lifecycle import Kind, RequestState, is_terminal
from telenet.services import consultation_members as members
from telenet.services.access import load_for_action, load_request
from telenet.services.events import PendingEvent, emit, request_topics
from telenet.services.hub import Hub, UnitOfWork, read_use_case, use_case
from telenet.store.models import Center, Consultation, ConsultationStep, Message, Report, Request, User

# ------------------------------------------------------------------------------------------------ thread


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


def message_view(message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "author": message.author_name,
        "institution": message.author_institution,
        "body": message.body,
        "at": message.at.isoformat(),
    }


# ------------------------------------------------------------------------------------------------ session


def _time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise Invalid("time: an ISO 8601 time with its UTC offset", code="bad-time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Invalid("time is not an ISO 8601 time", code="bad-time") from None
    if moment.tzinfo is None:
        raise Invalid("time needs a UTC offset", code="bad-time")
    return moment


async def _advance(hub: Hub, session: AsyncSession, row: Consultation, step: Step, **values: Any) -> str:
    """Move the session by ``step`` with one conditional UPDATE; 409 when illegal or raced."""
    target = next_phase(row.phase, step).value
    changes = {"phase": target, "version": row.version + 1, **values}
    result = await session.execute(
        update(Consultation)
        .where(Consultation.request_id == row.request_id, Consultation.version == row.version)
        .values(**changes)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        raise Conflict(
            f"consultation {row.request_id} was changed by someone else; reload and try again",
            code="concurrent-change",
        )
    for key, value in changes.items():
        set_committed_value(row, key, value)
    return target


async def _emit_step(
    hub: Hub, uow: UnitOfWork, request: Request, center: Center, inst_code: str, name: str, data: dict[str, Any]
) -> None:
    await emit(
        uow.session,
        hub,
        f"consultation.{name}",
        request_topics(request.id, center.code, inst_code),
        {"request_id": request.id, "accession_number": request.accession_number, **data},
        request_id=request.id,
    )


async def _open(uow: UnitOfWork, actor: Actor, request_id: int) -> tuple[Request, Center, str, Consultation]:
    request, center, inst_code = await load_for_action(uow, actor, request_id)
    members.require_consultation(request)
    row = await members.session_row(uow.session, request)
    return request, center, inst_code, row


async def propose_time(hub: Hub, actor: Actor, request_id: int, body: dict[str, Any]) -> dict[str, Any]:
    """Either side proposes a session time (the first, a counter-proposal, or a new one for a scheduled
    session); the other side must then agree it."""
    async with use_case(hub, actor, "consultation.propose", "request", str(request_id)) as uow:
        request, center, inst_code, row = await _open(uow, actor, request_id)
        side = members.require_side(actor, request, center, action="propose a session time")
        at = _time(body.get("time"))
        now = hub.clock.now()
        phase = await _advance(
            hub,
            uow.session,
            row,
            Step.PROPOSE,
            proposed_time=at,
            proposed_by=actor.username,
            proposed_by_side=side.value,
            proposed_on=now,
            agreed_time=None,
            agreed_by=None,
            agreed_on=None,
        )
        detail = {"time": at.isoformat(), "side": side.value}
        members.record_step(uow.session, hub, actor, request, "propose", phase, note=body.get("note"), detail=detail)
        await _emit_step(hub, uow, request, center, inst_code, "time_proposed", {"by": actor.username, **detail})
        return await _committed(uow, actor, request.id)


async def agree_time(hub: Hub, actor: Actor, request_id: int) -> dict[str, Any]:
    """The side that did not propose the time agrees it: the session is scheduled."""
    async with use_case(hub, actor, "consultation.agree", "request", str(request_id)) as uow:
        request, center, inst_code, row = await _open(uow, actor, request_id)
        side = members.require_side(actor, request, center, action="agree a session time")
        next_phase(row.phase, Step.AGREE)
        check_agreeing_side(row.proposed_by_side, side)
        now = hub.clock.now()
        phase = await _advance(
            hub, uow.session, row, Step.AGREE, agreed_time=row.proposed_time, agreed_by=actor.username, agreed_on=now
        )
        detail = {"time": row.proposed_time.isoformat() if row.proposed_time else None, "side": side.value}
        members.record_step(uow.session, hub, actor, request, "agree", phase, detail=detail)
        await _emit_step(hub, uow, request, center, inst_code, "scheduled", {"by": actor.username, **detail})
        return await _committed(uow, actor, request.id)


async def start(hub: Hub, actor: Actor, request_id: int) -> dict[str, Any]:
    """The consultant who accepted the consultation (holds its claim), or a coordinator of its center, starts
    the scheduled session."""
    async with use_case(hub, actor, "consultation.start", "request", str(request_id)) as uow:
        request, center, inst_code, row = await _open(uow, actor, request_id)
        holder = request.claimed_by_id == actor.user_id
        if not holder and not (actor.role is Role.COORDINATOR and center.code in actor.center_codes):
            raise Forbidden("only the consultant holding the consultation or its center's coordinator may start it")
        next_phase(row.phase, Step.START)
        if request.state != RequestState.CLAIMED.value:
            raise Conflict(
                "a consultant accepts (claims) the consultation before its session starts",
                code="not-accepted",
                details={"state": request.state},
            )
        now = hub.clock.now()
        phase = await _advance(hub, uow.session, row, Step.START, started_at=now, started_by=actor.username)
        members.record_step(uow.session, hub, actor, request, "start", phase)
        await _emit_step(hub, uow, request, center, inst_code, "started", {"by": actor.username})
        return await _committed(uow, actor, request.id)


# ------------------------------------------------------------------------------------------------ members


async def invite_center(hub: Hub, actor: Actor, request_id: int, code: str) -> dict[str, Any]:
    async with use_case(hub, actor, "consultation.center.invite", "request", str(request_id)) as uow:
        request, center, inst_code, row = await _open(uow, actor, request_id)
        members.require_side(actor, request, center, action="invite a center")
        members.require_not_closed(request, row)
        await members.invite_center(uow.session, hub, actor, request, code, emit_to=(center.code, inst_code))
        return await _committed(uow, actor, request.id)


async def remove_center(hub: Hub, actor: Actor, request_id: int, code: str) -> dict[str, Any]:
    async with use_case(hub, actor, "consultation.center.remove", "request", str(request_id)) as uow:
        request, center, inst_code, _row = await _open(uow, actor, request_id)
        members.require_side(actor, request, center, action="remove a center")
        await members.remove_center(uow.session, hub, actor, request, code, emit_to=(center.code, inst_code))
        return await _committed(uow, actor, request.id)


async def add_participant(hub: Hub, actor: Actor, request_id: int, username: str) -> dict[str, Any]:
    async with use_case(hub, actor, "consultation.participant.add", "request", str(request_id)) as uow:
        request, center, inst_code, row = await _open(uow, actor, request_id)
        members.require_side(actor, request, center, action="invite a participant")
        members.require_not_closed(request, row)
        await members.add_participant(uow.session, hub, actor, request, username, emit_to=(center.code, inst_code))
        return await _committed(uow, actor, request.id)


async def remove_participant(
    hub: Hub, actor: Actor, request_id: int, username: str, reason: str | None
) -> dict[str, Any]:
    async with use_case(hub, actor, "consultation.participant.remove", "request", str(request_id)) as uow:
        request, center, inst_code, _row = await _open(uow, actor, request_id)
        members.require_side(actor, request, center, action="remove a participant")
        await members.remove_participant(
            uow.session, hub, actor, request, username, reason, emit_to=(center.code, inst_code)
        )
        return await _committed(uow, actor, request.id)


# ------------------------------------------------------------------------------------------------ views


async def get(hub: Hub, actor: Actor, request_id: int) -> dict[str, Any]:
    async with read_use_case(hub, actor, "consultation.read", "request", str(request_id)) as uow:
        request = await load_request(uow.session, actor, request_id, uow=uow)
        members.require_consultation(request)
        return await consultation_view(uow.session, actor, request)


async def _committed(uow: UnitOfWork, actor: Actor, request_id: int) -> dict[str, Any]:
    await uow.commit()
    async with uow.hub.reader() as session:
        request = await session.get(Request, request_id)
        assert request is not None
        return await consultation_view(session, actor, request)


async def consultation_view(session: AsyncSession, actor: Actor, request: Request) -> dict[str, Any]:
    """The session as the API and the console show it: phase, times with who and when, centers, participants,
    the timeline, and the steps the caller may take now."""
    row = await session.get(Consultation, request.id)
    steps = (
        (
            await session.execute(
                select(ConsultationStep).where(ConsultationStep.request_id == request.id).order_by(ConsultationStep.id)
            )
        )
        .scalars()
        .all()
    )
    if row is None:  # ordered before sessions existed: what its first step would make of it
        first = Phase.PROPOSED if request.scheduled_at else Phase.REQUESTED
        row = Consultation(
            request_id=request.id,
            phase=first.value,
            proposed_time=request.scheduled_at,
            proposed_by_side=Side.REQUESTING.value if request.scheduled_at else None,
            proposed_by=request.requester_name if request.scheduled_at else None,
            proposed_on=request.ordered_at if request.scheduled_at else None,
            version=0,
        )
    phase = Phase.CANCELLED.value if request.state == RequestState.CANCELLED.value else row.phase
    center = await session.get(Center, request.center_id)
    assert center is not None
    side = members.side_of(actor, request, center)
    may = sorted(s.value for s in allowed_steps(phase) if s is not Step.OPINION) if side else []
    if Step.AGREE.value in may and row.proposed_by_side == (side.value if side else None):
        may.remove(Step.AGREE.value)
    if (
        Step.START.value in may
        and request.claimed_by_id != actor.user_id
        and not (actor.role is Role.COORDINATOR and center.code in actor.center_codes)
    ):
        may.remove(Step.START.value)
    if Step.CANCEL.value in may and side is not Side.REQUESTING:
        may.remove(Step.CANCEL.value)
    return {
        "request_id": request.id,
        "accession_number": request.accession_number,
        "state": request.state,
        "phase": phase,
        "mode": "written" if row.proposed_time is None and row.started_at is None else "live",
        "proposed": _moment(row.proposed_time, row.proposed_by, row.proposed_on, side=row.proposed_by_side),
        "agreed": _moment(row.agreed_time, row.agreed_by, row.agreed_on),
        "started": {"at": _iso(row.started_at), "by": row.started_by} if row.started_at else None,
        "opinion": {"at": _iso(row.opinion_at), "by": row.opinion_by} if row.opinion_at else None,
        "cancelled": {"at": _iso(row.cancelled_at), "by": row.cancelled_by} if row.cancelled_at else None,
        "your_side": side.value if side else None,
        "allowed_actions": may,
        **await members.members_view(session, request),
        "timeline": [
            {
                "at": _iso(s.at),
                "action": s.action,
                "phase": s.phase,
                "by": s.by,
                "by_name": s.by_name,
                "institution": s.by_institution,
                "note": s.note,
                "detail": s.detail,
            }
            for s in steps
        ],
    }


def _moment(time: datetime | None, by: str | None, on: datetime | None, **extra: Any) -> dict[str, Any] | None:
    if time is None:
        return None
    return {"time": time.isoformat(), "by": by, "at": _iso(on), **extra}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# ------------------------------------------------------------------------------------------------ follow-ups


async def on_final(hub: Hub, session: AsyncSession, request: Request, report: Report) -> None:
    """A consultation's signed final report is its opinion (会诊意见): legal from a session in progress or for a
    written consultation; anything else refuses the report (409) in its own transaction."""
    if request.kind != Kind.CONSULTATION.value or report.status != "final":
        return
    row = await members.session_row(session, request)
    signer = await session.get(User, report.author_id)
    username = signer.username if signer else report.author_name
    phase = await _advance(hub, session, row, Step.OPINION, opinion_at=report.signed_at, opinion_by=username)
    session.add(
        ConsultationStep(
            request_id=request.id,
            at=report.signed_at or hub.clock.now(),
            action="opinion",
            phase=phase,
            by=username,
            by_name=report.author_name,
            detail={"report_id": report.id},
        )
    )


async def on_event(session: AsyncSession, hub: Hub, event: PendingEvent) -> None:
    """A cancelled consultation (REST, HL7 CA or DC) ends its session: the phase and the timeline say so."""
    if event.name != "request.cancelled" or event.data.get("kind") != Kind.CONSULTATION.value:
        return
    request = await session.get(Request, event.request_id)
    if request is None:
        return
    row = await members.session_row(session, request)
    if Step.CANCEL not in allowed_steps(row.phase):
        return
    by = str(event.data.get("by") or request.requester_name)
    phase = await _advance(hub, session, row, Step.CANCEL, cancelled_at=event.at, cancelled_by=by)
    session.add(
        ConsultationStep(
            request_id=request.id,
            at=event.at,
            action="cancel",
            phase=phase,
            by=by,
            by_name=by,
            note=event.data.get("reason"),
        )
    )
