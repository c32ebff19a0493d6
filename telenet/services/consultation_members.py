"""Who takes part in a consultation (MDT): the centers invited beside the one it is routed to, and the invited
specialists. A participant must belong to the consultation's center or to a center invited to it, and sees the
request (page, studies, attachments, live session) only while invited: a removal ends access at once, and its
event tells every live channel to drop the removed person's subscription with the reason.

Also the consultation's session row and timeline, which every consultation use case writes through here."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telenet.domain.access import Actor, Role
from telenet.domain.consultation import Phase, Side
from telenet.domain.errors import Conflict, Forbidden, Invalid, NotFound
from telenet.domain.lifecycle import Kind
from telenet.domain.tiers import is_within
from telenet.services.events import emit, request_topics
from telenet.services.hub import Hub
from telenet.store.models import (
    Center,
    Consultation,
    ConsultationCenter,
    ConsultationStep,
    Participant,
    Request,
    User,
    UserCenter,
)

PARTICIPANT_ROLES = (Role.READER, Role.COORDINATOR)
MAX_INVITED_CENTERS = 10


def require_consultation(request: Request) -> None:
    if request.kind != Kind.CONSULTATION.value:
        raise Invalid("only a consultation has a session, centers and participants", code="not-consultation")


def side_of(actor: Actor, request: Request, center: Center) -> Side | None:
    """Which side the actor speaks for: the consultant center (its readers and coordinators, the holder) or the
    requesting side (its institution; coordinators and admins above it); None for anyone else."""
    if request.claimed_by_id == actor.user_id or (
        actor.role in PARTICIPANT_ROLES and center.code in actor.center_codes
    ):
        return Side.CONSULTANT
    if actor.role in (Role.REQUESTER, Role.INTEGRATION) and request.requesting_institution_id == actor.institution_id:
        return Side.REQUESTING
    if actor.role in (Role.COORDINATOR, Role.ADMIN) and is_within(request.requesting_path, actor.institution_path):
        return Side.REQUESTING
    return None


def require_side(actor: Actor, request: Request, center: Center, *, action: str) -> Side:
    side = side_of(actor, request, center)
    if side is None:
        raise Forbidden(f"only the requesting side or the consultant center may {action}", code="scope")
    return side


async def session_row(session: AsyncSession, request: Request) -> Consultation:
    """The consultation's session row, made at its first use (a consultation ordered before sessions existed
    gets it then): ``proposed`` when the order carried a wished time, else ``requested``."""
    row = await session.get(Consultation, request.id)
    if row is not None:
        return row
    requester = await session.get(User, request.requester_id) if request.requester_id else None
    by = requester.username if requester else request.requester_name
    row = Consultation(request_id=request.id, phase=Phase.REQUESTED.value, version=1)
    if request.scheduled_at is not None:
        row.phase = Phase.PROPOSED.value
        row.proposed_time = request.scheduled_at
        row.proposed_by = by
        row.proposed_by_side = Side.REQUESTING.value
        row.proposed_on = request.ordered_at
    session.add(row)
    session.add(
        ConsultationStep(
            request_id=request.id,
            at=request.ordered_at,
            action="ordered" if request.scheduled_at is None else "propose",
            phase=row.phase,
            by=by,
            by_name=request.requester_name,
            detail={"time": request.scheduled_at.isoformat()} if request.scheduled_at else None,
        )
    )
    await session.flush()
    return row


def record_step(
    session: AsyncSession,
    hub: Hub,
    actor: Actor,
    request: Request,
    action: str,
    phase: str,
    *,
    note: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    session.add(
        ConsultationStep(
            request_id=request.id,
            at=hub.clock.now(),
            action=action,
            phase=phase,
            by=actor.username,
            by_name=actor.display_name or actor.username,
            by_institution=actor.institution_code,
            note=note,
            detail=detail,
        )
    )


async def invited_center_ids(session: AsyncSession, request: Request) -> set[int]:
    """The consultation's center and the centers invited to it now."""
    rows = (
        await session.execute(
            select(ConsultationCenter.center_id).where(
                ConsultationCenter.request_id == request.id, ConsultationCenter.removed_at.is_(None)
            )
        )
    ).scalars()
    return {request.center_id, *rows}


async def invite_center(
    session: AsyncSession, hub: Hub, actor: Actor, request: Request, code: str, *, emit_to: tuple[str, str]
) -> Center:
    """Invite a center (MDT); inviting one already taking part changes nothing."""
    require_consultation(request)
    center = (await session.execute(select(Center).where(Center.code == code))).scalar_one_or_none()
    if center is None:
        raise Invalid(f"no center {code!r}", code="unknown-center")
    active = await invited_center_ids(session, request)
    if center.id in active:
        return center
    if len(active) > MAX_INVITED_CENTERS:
        raise Invalid(f"a consultation invites at most {MAX_INVITED_CENTERS} centers", code="too-many-centers")
    session.add(
        ConsultationCenter(
            request_id=request.id, center_id=center.id, invited_by=actor.username, invited_at=hub.clock.now()
        )
    )
    phase = (await session_row(session, request)).phase
    record_step(session, hub, actor, request, "center_invited", phase, detail={"center": center.code})
    await emit(
        session,
        hub,
        "consultation.center_invited",
        [*request_topics(request.id, emit_to[0], emit_to[1]), f"worklist:{center.code}"],
        {"request_id": request.id, "center": center.code, "by": actor.username},
        request_id=request.id,
    )
    return center


async def remove_center(
    session: AsyncSession, hub: Hub, actor: Actor, request: Request, code: str, *, emit_to: tuple[str, str]
) -> list[str]:
    """End a center's invitation and the access of every participant who took part for it; their usernames."""
    require_consultation(request)
    row = (
        await session.execute(
            select(ConsultationCenter)
            .join(Center, Center.id == ConsultationCenter.center_id)
            .where(
                ConsultationCenter.request_id == request.id,
                ConsultationCenter.removed_at.is_(None),
                Center.code == code,
            )
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"center {code!r} is not invited to consultation {request.id}")
    now = hub.clock.now()
    row.removed_at, row.removed_by = now, actor.username
    members = (
        (
            await session.execute(
                select(User.username)
                .join(Participant, Participant.user_id == User.id)
                .where(
                    Participant.request_id == request.id,
                    Participant.center_id == row.center_id,
                    Participant.removed_at.is_(None),
                )
            )
        )
        .scalars()
        .all()
    )
    phase = (await session_row(session, request)).phase
    record_step(session, hub, actor, request, "center_removed", phase, detail={"center": code})
    for username in members:
        await remove_participant(
            session, hub, actor, request, username, f"center {code} no longer invited", emit_to=emit_to
        )
    return list(members)


async def add_participant(
    session: AsyncSession,
    hub: Hub,
    actor: Actor,
    request: Request,
    username: str,
    *,
    emit_to: tuple[str, str] | None = None,
) -> User:
    """Invite a specialist: an active reader or coordinator of the consultation's center or of an invited
    center. Inviting again someone removed gives access back (the timeline keeps both steps)."""
    if request.kind != Kind.CONSULTATION.value:
        raise Invalid("only a consultation has participants", code="participants-not-allowed")
    user = (await session.execute(select(User).where(User.username == username))).scalar_one_or_none()
    if user is None:
        raise Invalid(f"participant {username!r} is not a user", code="unknown-participant")
    if Role(user.role) not in PARTICIPANT_ROLES or not user.active:
        raise Invalid(
            f"participant {username!r} is not an active reader or coordinator", code="participant-not-specialist"
        )
    centers = await invited_center_ids(session, request)
    theirs = (await session.execute(select(UserCenter.center_id).where(UserCenter.user_id == user.id))).scalars().all()
    matching = [c for c in theirs if c in centers]
    if not matching:
        raise Invalid(
            f"participant {username!r} belongs to no center invited to this consultation: invite the center first",
            code="participant-center-not-invited",
        )
    # The invited center the participant takes part for (an invited one before the routed one).
    center_id = next((c for c in matching if c != request.center_id), matching[0])
    existing = await session.get(Participant, (request.id, user.id))
    now = hub.clock.now()
    if existing is not None and existing.removed_at is None:
        return user
    if existing is None:
        session.add(
            Participant(
                request_id=request.id, user_id=user.id, added_at=now, center_id=center_id, added_by=actor.username
            )
        )
    else:
        existing.added_at, existing.center_id, existing.added_by = now, center_id, actor.username
        existing.removed_at = existing.removed_by = existing.removal_reason = None
    phase = (await session_row(session, request)).phase
    center_code = (await session.execute(select(Center.code).where(Center.id == center_id))).scalar_one()
    record_step(
        session, hub, actor, request, "participant_added", phase, detail={"username": username, "center": center_code}
    )
    if emit_to is not None:
        await emit(
            session,
            hub,
            "consultation.participant_added",
            request_topics(request.id, emit_to[0], emit_to[1]),
            {"request_id": request.id, "username": username, "center": center_code, "by": actor.username},
            request_id=request.id,
        )
    await session.flush()
    return user


async def remove_participant(
    session: AsyncSession,
    hub: Hub,
    actor: Actor,
    request: Request,
    username: str,
    reason: str | None,
    *,
    emit_to: tuple[str, str],
) -> None:
    """End a participant's access now; the event names whose live subscriptions end (``revoke``)."""
    require_consultation(request)
    user = (await session.execute(select(User).where(User.username == username))).scalar_one_or_none()
    participant = await session.get(Participant, (request.id, user.id)) if user is not None else None
    if user is None or participant is None or participant.removed_at is not None:
        raise NotFound(f"{username!r} is not a participant of consultation {request.id}")
    participant.removed_at, participant.removed_by = hub.clock.now(), actor.username
    participant.removal_reason = reason
    phase = (await session_row(session, request)).phase
    record_step(session, hub, actor, request, "participant_removed", phase, note=reason, detail={"username": username})
    detail = f"removed from consultation {request.id} by {actor.username}" + (f": {reason}" if reason else "")
    await emit(
        session,
        hub,
        "consultation.participant_removed",
        request_topics(request.id, emit_to[0], emit_to[1]),
        {
            "request_id": request.id,
            "username": username,
            "by": actor.username,
            "reason": reason,
            # Read by the live channels of every hub process: drop these topics of this user, say why.
            "revoke": {
                "user_id": user.id,
                "topics": [f"request:{request.id}"],
                "code": "participant-removed",
                "detail": detail,
            },
        },
        request_id=request.id,
    )
    await session.flush()


async def invite_at_order(
    session: AsyncSession, hub: Hub, actor: Actor, request: Request, centers: Iterable[str], usernames: Iterable[str]
) -> None:
    """The centers and participants an order names (``invited_centers``, ``participants``), and the
    consultation's session row with its first timeline entry."""
    centers, usernames = list(centers), list(usernames)
    if request.kind != Kind.CONSULTATION.value:
        if centers or usernames:
            raise Invalid("only a consultation has participants", code="participants-not-allowed")
        return
    await session_row(session, request)
    for code in centers:
        center = (await session.execute(select(Center).where(Center.code == code))).scalar_one_or_none()
        if center is None:
            raise Invalid(f"no center {code!r}", code="unknown-center")
        if center.id not in await invited_center_ids(session, request):
            session.add(
                ConsultationCenter(
                    request_id=request.id, center_id=center.id, invited_by=actor.username, invited_at=hub.clock.now()
                )
            )
            record_step(session, hub, actor, request, "center_invited", Phase.REQUESTED.value, detail={"center": code})
            await session.flush()
    for username in usernames:
        await add_participant(session, hub, actor, request, username)


async def members_view(session: AsyncSession, request: Request) -> dict[str, Any]:
    """The invited centers and the participants, present and past (who added or removed them, when)."""
    routed = (await session.execute(select(Center.code).where(Center.id == request.center_id))).scalar_one()
    invited = (
        await session.execute(
            select(ConsultationCenter, Center.code)
            .join(Center, Center.id == ConsultationCenter.center_id)
            .where(ConsultationCenter.request_id == request.id)
            .order_by(ConsultationCenter.id)
        )
    ).all()
    people = (
        await session.execute(
            select(Participant, User.username, User.display_name, Center.code)
            .join(User, User.id == Participant.user_id)
            .outerjoin(Center, Center.id == Participant.center_id)
            .where(Participant.request_id == request.id)
            .order_by(Participant.added_at, User.username)
        )
    ).all()
    return {
        "centers": [
            {
                "code": routed,
                "role": "consultant",
                "invited_by": None,
                "invited_at": None,
                "removed_by": None,
                "removed_at": None,
            }
        ]
        + [
            {
                "code": code,
                "role": "invited",
                "invited_by": c.invited_by,
                "invited_at": _iso(c.invited_at),
                "removed_by": c.removed_by,
                "removed_at": _iso(c.removed_at),
            }
            for c, code in invited
        ],
        "participants": [
            {
                "username": username,
                "name": name,
                "center": code,
                "added_by": p.added_by,
                "added_at": _iso(p.added_at),
                "removed_by": p.removed_by,
                "removed_at": _iso(p.removed_at),
                "removal_reason": p.removal_reason,
                "active": p.removed_at is None,
            }
            for p, username, name, code in people
        ],
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def require_not_closed(request: Request, row: Consultation) -> None:
    if row.phase in (Phase.OPINION.value, Phase.CANCELLED.value) or request.state == "cancelled":
        raise Conflict(
            f"the consultation is {row.phase}: its participants can no longer change",
            code="illegal-transition",
            details={"phase": row.phase},
        )
