"""Routing in the service layer: gather the candidate centers from the registry, let the domain choose,
and store the decision with its reasons in the route history."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from telenet.domain.routing import (
    CenterCandidate,
    RouteDecision,
    RouteQuery,
    RouteRule,
    choose_center,
    parse_opening_hours,
)
from telenet.domain.tiers import Tier
from telenet.services.hub import Hub
from telenet.services.registry_snapshot import RegistrySnapshot
from telenet.store.models import (
    Agreement,
    Center,
    Institution,
    NetworkMember,
    Request,
    RouteStep,
    RoutingRule,
)

ACTIVE_STATES = ("queued", "claimed")
# Work committed to a center: what is waiting for its data counts against capacity too.
LOAD_STATES = ("ordered", "queued", "claimed")


async def candidates(session: AsyncSession, kind: str, requester: Institution, today: date) -> list[CenterCandidate]:
    """Every center of the service, with whether an agreement in force covers it for the requester and its load."""
    rows = (
        await session.execute(
            select(Center, Institution)
            .join(Institution, Institution.id == Center.institution_id)
            .where(Center.service == kind)
        )
    ).all()
    in_force = (
        await session.execute(
            select(Agreement.lead_id, Agreement.services).where(
                Agreement.member_id == requester.id,
                Agreement.valid_from <= today,
                Agreement.valid_to >= today,
            )
        )
    ).all()
    covering = {lead_id for lead_id, services in in_force if kind in services}
    load = await _load(session, [center.id for center, _ in rows])
    found = []
    for center, inst in rows:
        found.append(
            CenterCandidate(
                code=center.code,
                name=center.name,
                institution_code=inst.code,
                institution_path=inst.path,
                tier=Tier(inst.tier),
                service=center.service,
                modalities=frozenset(center.modalities),
                subspecialties=frozenset(center.subspecialties),
                opening_hours=parse_opening_hours(center.opening_hours),
                capacity=center.capacity,
                load=int(load.get(center.id, 0)),
                # A center of the requester's own institution needs no agreement: it is not a remote service.
                agreement_in_force=inst.id == requester.id or inst.id in covering,
            )
        )
    return found


async def rules_for(session: AsyncSession, requester: Institution) -> list[RouteRule]:
    """The explicit rules of every network the requester is a member of, in network and position order."""
    rows = (
        await session.execute(
            select(RoutingRule, Center.code)
            .join(Center, Center.id == RoutingRule.center_id)
            .join(NetworkMember, NetworkMember.network_id == RoutingRule.network_id)
            .where(NetworkMember.institution_id == requester.id)
            .order_by(RoutingRule.network_id, RoutingRule.position)
        )
    ).all()
    return [
        RouteRule(
            kind=r.kind,
            center_code=code,
            modality=r.modality,
            body_part=r.body_part,
            priority=r.priority,
            reason=r.reason,
        )
        for r, code in rows
    ]


async def decide(hub: Hub, session: AsyncSession, query: RouteQuery, requester: Institution) -> RouteDecision:
    """The center for ``query``, from the registry versions in force now (the snapshot holds the changes an
    admin scheduled; without a snapshot the live rows, which the sweeper brings up to date)."""
    now = hub.clock.now()
    snap = await snapshot(hub)
    if snap is None:
        found = await candidates(session, query.kind, requester, now.date())
        return choose_center(query, found, await rules_for(session, requester), now)
    # The registry from memory: the only statement left is the current load of the service's centers.
    centers = snap.centers_of_service(query.kind, now)
    load = await _load(session, [center.id for center, _ in centers])
    return choose_center(
        query,
        snapshot_candidates(snap, query.kind, requester, now, load, centers),
        snapshot_rules(snap, requester),
        now,
    )


async def snapshot(hub: Hub) -> RegistrySnapshot | None:
    return await hub.registry.get() if hub.registry is not None else None


# The open requests of the given centers, counted in the worklist index (center_id, state, ...) alone: a seek per
# center and state. Counting by state over all centers scanned the whole index, final requests included, so
# every order under the write lock cost time in proportion to every request the network ever had.
_LOAD = (
    select(Request.center_id, func.count())
    .where(Request.center_id.in_(bindparam("ids", expanding=True)), Request.state.in_(LOAD_STATES))
    .group_by(Request.center_id)
)


async def _load(session: AsyncSession, center_ids: list[int]) -> dict[int, int]:
    """How many requests each of ``center_ids`` has open (ordered, queued or claimed)."""
    if not center_ids:
        return {}
    rows = await session.execute(_LOAD, {"ids": center_ids})
    return {int(center_id): int(count) for center_id, count in rows.all()}


def snapshot_candidates(
    snap: RegistrySnapshot,
    kind: str,
    requester: Institution,
    at: datetime,
    load: dict[int, int],
    centers: list[tuple[Center, Institution]],
) -> list[CenterCandidate]:
    """As :func:`candidates`, from the registry snapshot: the centers of the service (``centers``), their
    institutions and the agreements in the versions in force at ``at`` (the time of the routing decision)."""
    today = at.date()
    covering = {
        a.lead_id
        for a in snap.agreements_of(requester.id, at)
        if a.valid_from <= today <= a.valid_to and kind in a.services
    }
    return [
        CenterCandidate(
            code=center.code,
            name=center.name,
            institution_code=inst.code,
            institution_path=inst.path,
            tier=Tier(inst.tier),
            service=center.service,
            modalities=frozenset(center.modalities),
            subspecialties=frozenset(center.subspecialties),
            opening_hours=parse_opening_hours(center.opening_hours),
            capacity=center.capacity,
            load=load.get(center.id, 0),
            agreement_in_force=inst.id == requester.id or inst.id in covering,
        )
        for center, inst in centers
    ]


def snapshot_rules(snap: RegistrySnapshot, requester: Institution) -> list[RouteRule]:
    return [
        RouteRule(
            kind=r.kind,
            center_code=code,
            modality=r.modality,
            body_part=r.body_part,
            priority=r.priority,
            reason=r.reason,
        )
        for r, code in snap.rules_of_member.get(requester.id, ())
    ]


def considered_json(decision: RouteDecision) -> list[dict[str, Any]]:
    return [{"center": c.center_code, "eligible": c.eligible, "reason": c.reason} for c in decision.considered]


async def record(
    hub: Hub,
    session: AsyncSession,
    request_id: int,
    action: str,
    decision: RouteDecision,
    center_id: int | None,
    from_center_id: int | None,
    actor: str,
) -> RouteStep:
    step = RouteStep(
        request_id=request_id,
        at=hub.clock.now(),
        action=action,
        from_center_id=from_center_id,
        center_id=center_id,
        reason=decision.reason,
        considered=considered_json(decision),
        actor=actor,
    )
    session.add(step)
    return step


async def center_id_by_code(session: AsyncSession, code: str) -> int:
    return int((await session.execute(select(Center.id).where(Center.code == code))).scalar_one())
