"""Fees (收费、结算): the append-only ledger written when a report goes final, refunds and the schedule (the
monthly settlement statements are in ``settlement``).

Who pays whom: the inviting side (邀请方) is the requesting institution; the invited side (受邀方) is the
institution of the center that *signed* the final report, so escalated work is charged to the center
that did it. The split follows the agreement in force on the finalization day (Asia/Shanghai) whose lead
is the invited institution and whose member is the inviting one and that covers the service. Where
there is no such agreement — a center of the requester's own institution, which is not a remote service,
or a pair that no agreement covers — no line is written: nothing is charged without an agreement. A
final report that no schedule entry prices writes no line either and is logged; both show up in the
assessment as ``finals_without_fee``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from telenet.domain import fees as rules
from telenet.domain.access import SUBTREE_ROLES, Actor, Role
from telenet.domain.assessment import yuan
from telenet.domain.errors import Conflict, Forbidden, Invalid, NotFound
from telenet.domain.routing import LOCAL_TZ
from telenet.domain.tiers import is_within
from telenet.services.access import center_of, require_role
from telenet.services.hub import Hub, UnitOfWork, read_use_case, use_case
from telenet.services.registry_snapshot import RegistrySnapshot
from telenet.store.models import (
    Agreement,
    Center,
    FeeLine,
    FeeScheduleEntry,
    Institution,
    Network,
    Report,
    Request,
    User,
)

log = logging.getLogger(__name__)

CURRENCY = {"currency": "CNY", "unit": "fen", "note": "all amounts are integer fen (1 yuan = 100 fen)"}
SERVICES = ("imaging", "ecg", "consultation")


def local_day(moment: datetime) -> date:
    """The calendar day in Asia/Shanghai: the day a price or an agreement is in force."""
    return moment.astimezone(LOCAL_TZ).date()


# --- recording -------------------------------------------------------------------------------------------


async def agreement_in_force(
    session: AsyncSession, *, lead_id: int, member_id: int, service: str, on: date
) -> tuple[Agreement, str] | None:
    """The agreement between lead (invited) and member (inviting) covering ``service`` on ``on``, with its
    network code. Two networks with the same pair: the most recent ``valid_from`` wins, then the lowest id."""
    rows = (
        await session.execute(
            select(Agreement, Network.code)
            .join(Network, Network.id == Agreement.network_id)
            .where(
                Agreement.lead_id == lead_id,
                Agreement.member_id == member_id,
                Agreement.valid_from <= on,
                Agreement.valid_to >= on,
            )
            .order_by(Agreement.valid_from.desc(), Agreement.id)
        )
    ).all()
    for agreement, network_code in rows:
        if service in agreement.services:
            return agreement, network_code
    return None


async def price_in_force(
    session: AsyncSession,
    *,
    service: str,
    modality: str | None,
    priority: str | None,
    subspecialty: str | None,
    on: date,
) -> FeeScheduleEntry | None:
    """The schedule row ``rules.price_for`` picks (most specific entry in force on ``on``)."""
    rows = (await session.execute(select(FeeScheduleEntry).where(FeeScheduleEntry.service == service))).scalars()
    return _price_in(
        list(rows), service=service, modality=modality, priority=priority, subspecialty=subspecialty, on=on
    )


def _agreement_in(
    snap: RegistrySnapshot, *, lead_id: int, member_id: int, service: str, on: date
) -> tuple[Agreement, str] | None:
    """:func:`agreement_in_force` on the registry in memory (same order: latest valid_from, then lowest id)."""
    candidates = [
        a
        for a in snap.agreements_of_member.get(member_id, ())
        if a.lead_id == lead_id and a.valid_from <= on <= a.valid_to and a.network_id in snap.network_codes
    ]
    candidates.sort(key=lambda a: (-a.valid_from.toordinal(), a.id))
    for agreement in candidates:
        if service in agreement.services:
            return agreement, snap.network_codes[agreement.network_id]
    return None


def _price_in(
    rows: list[FeeScheduleEntry],
    *,
    service: str,
    modality: str | None,
    priority: str | None,
    subspecialty: str | None,
    on: date,
) -> FeeScheduleEntry | None:
    by_entry: dict[int, FeeScheduleEntry] = {}
    entries = []
    for row in rows:
        entry = rules.FeeScheduleEntry(
            row.service,
            row.modality,
            row.priority,
            row.subspecialty,
            row.price_fen,
            row.effective_from,
            row.effective_to,
        )
        by_entry[id(entry)] = row
        entries.append(entry)
    chosen = rules.price_for(
        entries, service=service, modality=modality, priority=priority, subspecialty=subspecialty, on=on
    )
    return by_entry[id(chosen)] if chosen is not None else None


async def record_final(hub: Hub, session: AsyncSession, request: Request, report: Report) -> FeeLine | None:
    """Write the one fee line of a final report, in the report's transaction; None when nothing is charged
    (an addendum or a preliminary report, the requester's own institution, no agreement, no price)."""
    if report.status != "final" or report.signed_at is None:
        return None
    snap = await hub.registry.get() if hub.registry is not None else None
    if snap is not None and report.center_id in snap.centers and request.requesting_institution_id in snap.institutions:
        # The registry in memory: center, institutions, agreements and the schedule without a statement.
        center, invited = snap.center(report.center_id)
        inviting: Institution | None = snap.institutions[request.requesting_institution_id]
    else:
        snap = None
        center, invited = await center_of(session, report.center_id)
        inviting = await session.get(Institution, request.requesting_institution_id)
    assert inviting is not None
    if invited.id == inviting.id:
        return None
    on = local_day(report.signed_at)
    if snap is not None:
        found = _agreement_in(snap, lead_id=invited.id, member_id=inviting.id, service=request.kind, on=on)
    else:
        found = await agreement_in_force(
            session, lead_id=invited.id, member_id=inviting.id, service=request.kind, on=on
        )
    if found is None:
        log.warning(
            "request %s: no agreement %s→%s for %s on %s; no fee",
            request.id,
            inviting.code,
            invited.code,
            request.kind,
            on,
        )
        return None
    agreement, network_code = found
    if snap is not None:
        entry = _price_in(
            [row for row in snap.fee_schedule if row.service == request.kind],
            service=request.kind,
            modality=request.modality,
            priority=request.priority,
            subspecialty=request.subspecialty,
            on=on,
        )
    else:
        entry = await price_in_force(
            session,
            service=request.kind,
            modality=request.modality,
            priority=request.priority,
            subspecialty=request.subspecialty,
            on=on,
        )
    if entry is None:
        log.warning(
            "request %s: the fee schedule prices no %s/%s/%s on %s; no fee",
            request.id,
            request.kind,
            request.modality,
            request.priority,
            on,
        )
        return None
    inviting_fen, invited_fen = rules.split_fee(entry.price_fen, agreement.invited_share_bp)
    signer = await session.get(User, report.author_id)
    line = FeeLine(
        request_id=request.id,
        report_id=report.id,
        refund_of=None,
        inviting_institution_id=inviting.id,
        invited_institution_id=invited.id,
        inviting_path=inviting.path,
        invited_path=invited.path,
        center_id=center.id,
        service=request.kind,
        modality=request.modality,
        priority=request.priority,
        subspecialty=request.subspecialty,
        fee_schedule_id=entry.id,
        price_fen=entry.price_fen,
        inviting_fen=inviting_fen,
        invited_fen=invited_fen,
        agreement_id=agreement.id,
        network_code=network_code,
        invited_share_bp=agreement.invited_share_bp,
        reason=None,
        at=report.signed_at,
        actor=signer.username if signer is not None else report.author_name[:64],
    )
    session.add(line)
    await session.flush()
    return line


# --- reading ---------------------------------------------------------------------------------------------


async def institution_by_code(session: AsyncSession, code: str) -> Institution:
    inst = (await session.execute(select(Institution).where(Institution.code == code))).scalar_one_or_none()
    if inst is None:
        raise NotFound(f"no institution {code!r}")
    return inst


async def scope_root(
    session: AsyncSession, actor: Actor, code: str | None, uow: UnitOfWork | None = None
) -> tuple[Institution, bool]:
    """The institution a listing is about (the actor's own by default) and whether its subtree counts;
    403 when the actor may not see it (with ``uow``, audited as an attempt on that institution's data)."""
    inst = await institution_by_code(session, code) if code else await session.get(Institution, actor.institution_id)
    assert inst is not None
    if uow is not None:
        uow.audit(object_path=inst.path)
    if not actor.sees_institution(inst.path):
        raise Forbidden(f"{inst.code} is outside your scope", code="scope")
    return inst, actor.role in SUBTREE_ROLES


def involving(path: str, subtree: bool) -> ColumnElement[bool]:
    """Lines where either side is the institution (or, for subtree roles, lies under it)."""
    if subtree:
        return or_(
            FeeLine.inviting_path.startswith(path, autoescape=True),
            FeeLine.invited_path.startswith(path, autoescape=True),
        )
    return or_(FeeLine.inviting_path == path, FeeLine.invited_path == path)


def check_period(start: datetime | None, end: datetime | None) -> None:
    for moment in (start, end):
        if moment is not None and moment.tzinfo is None:
            raise Invalid("from and to need a UTC offset", code="bad-parameter")
    if start is not None and end is not None and end <= start:
        raise Invalid("to must be after from", code="bad-parameter")


async def institutions(session: AsyncSession, ids: set[int]) -> dict[int, Institution]:
    if not ids:
        return {}
    rows = (await session.execute(select(Institution).where(Institution.id.in_(ids)))).scalars()
    return {inst.id: inst for inst in rows}


async def line_views(session: AsyncSession, lines: Sequence[FeeLine]) -> list[dict[str, Any]]:
    """Ledger lines as the API shows them, with both institutions, the center and any refund of each."""
    insts = await institutions(
        session, {line.inviting_institution_id for line in lines} | {line.invited_institution_id for line in lines}
    )
    ids = [line.id for line in lines]
    centers = dict(
        (await session.execute(select(Center.id, Center.code).where(Center.id.in_({x.center_id for x in lines})))).all()
    )
    accessions = dict(
        (
            await session.execute(
                select(Request.id, Request.accession_number).where(Request.id.in_({x.request_id for x in lines}))
            )
        ).all()
    )
    refunded_by = dict(
        (await session.execute(select(FeeLine.refund_of, FeeLine.id).where(FeeLine.refund_of.in_(ids)))).all()
    )

    def party(inst_id: int) -> dict[str, str]:
        inst = insts[inst_id]
        return {"code": inst.code, "name": inst.name, "tier": inst.tier}

    return [
        {
            "id": line.id,
            "kind": "refund" if line.refund_of is not None else "charge",
            "request_id": line.request_id,
            "accession_number": accessions.get(line.request_id),
            "report_id": line.report_id,
            "inviting": party(line.inviting_institution_id),
            "invited": party(line.invited_institution_id),
            "center": centers.get(line.center_id),
            "service": line.service,
            "modality": line.modality,
            "priority": line.priority,
            "subspecialty": line.subspecialty,
            "fee_schedule_id": line.fee_schedule_id,
            "price_fen": line.price_fen,
            "inviting_fen": line.inviting_fen,
            "invited_fen": line.invited_fen,
            "invited_share_bp": line.invited_share_bp,
            "agreement": {"id": line.agreement_id, "network": line.network_code},
            "refund_of": line.refund_of,
            "refunded_by": refunded_by.get(line.id),
            "reason": line.reason,
            "at": line.at.isoformat(),
            "actor": line.actor,
        }
        for line in lines
    ]


async def list_fees(
    hub: Hub,
    actor: Actor,
    *,
    institution: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    service: str | None = None,
    limit: int = 500,
    before_id: int | None = None,
) -> dict[str, Any]:
    """Ledger lines involving the institution (requesters and integration accounts: their own; coordinators
    and admins: their subtree), newest first, with totals over the whole selection ``[from, to)``."""
    require_role(actor, Role.REQUESTER, Role.INTEGRATION, Role.COORDINATOR, Role.ADMIN, action="read fees")
    if service is not None and service not in SERVICES:
        raise Invalid(f"service must be one of {', '.join(SERVICES)}", code="bad-parameter")
    check_period(start, end)
    async with read_use_case(hub, actor, "fee.list", "fee_line") as uow:
        session = uow.session
        root, subtree = await scope_root(session, actor, institution, uow)
        uow.audit(object_path=root.path, detail={"institution": root.code, "service": service})
        where = [involving(root.path, subtree)]
        if start is not None:
            where.append(FeeLine.at >= start)
        if end is not None:
            where.append(FeeLine.at < end)
        if service is not None:
            where.append(FeeLine.service == service)
        totals = (
            await session.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(FeeLine.price_fen), 0),
                    func.coalesce(func.sum(FeeLine.inviting_fen), 0),
                    func.coalesce(func.sum(FeeLine.invited_fen), 0),
                ).where(*where)
            )
        ).one()
        page = select(FeeLine).where(*where)
        if before_id is not None:
            page = page.where(FeeLine.id < before_id)
        lines = (await session.execute(page.order_by(FeeLine.id.desc()).limit(limit))).scalars().all()
        return {
            **CURRENCY,
            "institution": root.code,
            "from": start.isoformat() if start else None,
            "to": end.isoformat() if end else None,
            "service": service,
            "totals": {
                "lines": int(totals[0]),
                "gross_fen": int(totals[1]),
                "inviting_fen": int(totals[2]),
                "invited_fen": int(totals[3]),
            },
            "items": await line_views(session, lines),
            "next_before_id": lines[-1].id if len(lines) == limit else None,
        }


async def fee_schedule(hub: Hub, actor: Actor, on: date | None = None) -> dict[str, Any]:
    """The versioned schedule (every version, or only those in force on ``on``), and how a price is chosen."""
    async with read_use_case(hub, actor, "fee_schedule.read", "fee_schedule") as uow:
        rows = (
            (
                await uow.session.execute(
                    select(FeeScheduleEntry).order_by(
                        FeeScheduleEntry.service,
                        FeeScheduleEntry.modality,
                        FeeScheduleEntry.priority,
                        FeeScheduleEntry.subspecialty,
                        FeeScheduleEntry.effective_from,
                    )
                )
            )
            .scalars()
            .all()
        )
        today = local_day(hub.clock.now())
        items = []
        for row in rows:
            in_force = row.effective_from <= (on or today) and (
                row.effective_to is None or (on or today) <= row.effective_to
            )
            if on is not None and not in_force:
                continue
            items.append(
                {
                    "id": row.id,
                    "service": row.service,
                    "modality": row.modality,
                    "priority": row.priority,
                    "subspecialty": row.subspecialty,
                    "price_fen": row.price_fen,
                    "price_yuan": yuan(row.price_fen),
                    "effective_from": row.effective_from.isoformat(),
                    "effective_to": row.effective_to.isoformat() if row.effective_to else None,
                    "in_force": in_force,
                    "source": row.source,
                }
            )
        return {
            **CURRENCY,
            "on": (on or today).isoformat(),
            "precedence": (rules.price_for.__doc__ or "").strip(),
            "items": items,
        }


# --- refunds ---------------------------------------------------------------------------------------------


# What a refund line repeats of the line it reverses: the parties, the service and the agreement snapshot.
REFUND_COPIES = tuple(
    "request_id inviting_institution_id invited_institution_id inviting_path invited_path center_id service "
    "modality priority subspecialty fee_schedule_id agreement_id network_code invited_share_bp".split()
)


async def refund(hub: Hub, actor: Actor, line_id: int, reason: str) -> dict[str, Any]:
    """A full refund of a charge: a new negative line mirroring its split, by an admin whose subtree holds
    both institutions of the line. A line is refunded once; a refund is never refunded."""
    require_role(actor, Role.ADMIN, action="refund a fee")
    if not reason.strip():
        raise Invalid("a refund needs a reason", code="reason-missing")
    async with use_case(hub, actor, "fee.refund", "fee_line", str(line_id)) as uow:
        session = uow.session
        query = select(FeeLine).where(FeeLine.id == line_id)
        if hub.dialect == "postgresql":
            query = query.with_for_update()
        line = (await session.execute(query)).scalar_one_or_none()
        if line is None:
            raise NotFound(f"no fee line {line_id}")
        uow.audit(object_path=line.invited_path)
        if not (
            is_within(line.inviting_path, actor.institution_path)
            and is_within(line.invited_path, actor.institution_path)
        ):
            raise Forbidden("only an admin over both institutions of the line may refund it", code="scope")
        if line.refund_of is not None:
            raise Invalid(f"fee line {line_id} is itself a refund", code="refund-of-refund")
        done = (await session.execute(select(FeeLine.id).where(FeeLine.refund_of == line.id))).scalar_one_or_none()
        if done is not None:
            raise Conflict(f"fee line {line_id} was already refunded by line {done}", code="already-refunded")
        inviting_fen, invited_fen = rules.refund_split((line.inviting_fen, line.invited_fen))
        row = FeeLine(
            **{column: getattr(line, column) for column in REFUND_COPIES},
            report_id=None,
            refund_of=line.id,
            price_fen=-line.price_fen,
            inviting_fen=inviting_fen,
            invited_fen=invited_fen,
            reason=reason.strip(),
            at=hub.clock.now(),
            actor=actor.username,
        )
        session.add(row)
        try:
            await session.flush()
        except IntegrityError:
            raise Conflict(f"fee line {line_id} was already refunded", code="already-refunded") from None
        uow.audit(detail={"refund_line_id": row.id, "price_fen": row.price_fen, "reason": row.reason})
        return (await line_views(session, [row]))[0]
