"""Who may see and act on a request: the scope rules of the service layer, used by every protocol."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telenet.domain.access import Actor, Role
from telenet.domain.errors import Forbidden, NotFound
from telenet.domain.tiers import is_within
from telenet.services.hub import UnitOfWork
from telenet.store.models import Center, Institution, Participant, Request


async def center_of(session: AsyncSession, center_id: int) -> tuple[Center, Institution]:
    row = (
        await session.execute(
            select(Center, Institution)
            .join(Institution, Institution.id == Center.institution_id)
            .where(Center.id == center_id)
        )
    ).one()
    return row[0], row[1]


async def center_by_code(session: AsyncSession, code: str) -> tuple[Center, Institution]:
    row = (
        await session.execute(
            select(Center, Institution)
            .join(Institution, Institution.id == Center.institution_id)
            .where(Center.code == code)
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"no center {code!r}")
    return row[0], row[1]


async def can_see_request(session: AsyncSession, actor: Actor, request: Request) -> bool:
    """The requesting side (its institution; coordinators and admins above it), the readers of the center it is
    at, whoever holds its claim, and the participants of a consultation."""
    if actor.role in (Role.REQUESTER, Role.INTEGRATION):
        return request.requesting_institution_id == actor.institution_id
    if actor.role is Role.COORDINATOR and is_within(request.requesting_path, actor.institution_path):
        return True
    if actor.role is Role.ADMIN and is_within(request.requesting_path, actor.institution_path):
        # Administrators get aggregates; a patient's record only with a stated reason (audited).
        if actor.break_glass:
            return True
        raise denied(
            Forbidden(
                f"request {request.id} holds patient data: state a reason (X-Break-Glass-Reason) to see it",
                code="break-glass-required",
            ),
            request.requesting_path,
        )
    if request.claimed_by_id == actor.user_id:
        return True
    center, inst = await center_of(session, request.center_id)
    if actor.sees_center(center.code, inst.path):
        return True
    # A participant sees the consultation only while invited: a removal ends access at once.
    participant = await session.get(Participant, (request.id, actor.user_id))
    return participant is not None and participant.removed_at is None


async def load_request(
    session: AsyncSession, actor: Actor, request_id: int, *, for_update: bool = False, uow: UnitOfWork | None = None
) -> Request:
    """The request if it exists and the actor may see it; 404 / 403 otherwise. With ``uow``, its audit row names
    the requesting institution before the scope check, so a refused attempt is on that institution's record."""
    query = select(Request).where(Request.id == request_id)
    if for_update and session.bind is not None and session.bind.dialect.name == "postgresql":
        query = query.with_for_update()
    request = (await session.execute(query)).scalar_one_or_none()
    if request is None:
        raise NotFound(f"no request {request_id}")
    if uow is not None:
        uow.audit(object_path=request.requesting_path)
    if not await can_see_request(session, actor, request):
        raise denied(Forbidden(f"request {request_id} is outside your scope", code="scope"), request.requesting_path)
    return request


def denied(exc: Forbidden, owner_path: str) -> Forbidden:
    """A refusal that names whose data was asked for: the audit files the denied attempt under the owner's
    institution, where its admins see it (services.hub.use_case)."""
    exc.object_path = owner_path  # type: ignore[attr-defined]
    return exc


async def load_for_action(
    uow: UnitOfWork, actor: Actor, request_id: int, *, integration_subtree: bool = False
) -> tuple[Request, Center, str]:
    """The request for a state-changing use case, with its current center and requesting institution's code;
    404/403 as for reading. Integration accounts (gateways) reach the requests of their institution's subtree."""
    session = uow.session
    if integration_subtree and actor.role is Role.INTEGRATION:
        request = (await session.execute(select(Request).where(Request.id == request_id))).scalar_one_or_none()
        if request is None or not is_within(request.requesting_path, actor.institution_path):
            raise (
                NotFound(f"no request {request_id}")
                if request is None
                else denied(
                    Forbidden(f"request {request_id} is outside your scope", code="scope"), request.requesting_path
                )
            )
    else:
        request = await load_request(session, actor, request_id, for_update=True, uow=uow)
    uow.audit(object_path=request.requesting_path)
    registry = uow.hub.registry
    snap = await registry.get() if registry is not None else None
    requester_id = request.requesting_institution_id
    if snap is not None and request.center_id in snap.centers and requester_id in snap.institutions:
        # The registry in memory (read it, never change it): no statement for the center and the requester.
        return request, snap.centers[request.center_id], snap.institutions[requester_id].code
    center, _ = await center_of(session, request.center_id)
    inst_code = (
        await session.execute(select(Institution.code).where(Institution.id == request.requesting_institution_id))
    ).scalar_one()
    return request, center, inst_code


def require_role(actor: Actor, *roles: Role, action: str) -> None:
    if actor.role not in roles:
        allowed = ", ".join(r.value for r in roles)
        raise Forbidden(f"only {allowed} may {action}; you are {actor.role.value}", code="role")


def require_center_staff(actor: Actor, center: Center, *, action: str, coordinators: bool = True) -> None:
    """Readers (and, where allowed, coordinators) of the request's current center."""
    roles = (Role.READER, Role.COORDINATOR) if coordinators else (Role.READER,)
    require_role(actor, *roles, action=action)
    if center.code not in actor.center_codes:
        raise Forbidden(f"{center.code} is not one of your centers", code="scope")


def require_requesting_side(actor: Actor, request: Request, *, action: str) -> None:
    """Users of the requesting institution (and coordinators/admins above it)."""
    if actor.role in (Role.REQUESTER, Role.INTEGRATION) and request.requesting_institution_id == actor.institution_id:
        return
    if actor.role in (Role.COORDINATOR, Role.ADMIN) and is_within(request.requesting_path, actor.institution_path):
        return
    raise Forbidden(f"only the requesting institution may {action}", code="scope")
