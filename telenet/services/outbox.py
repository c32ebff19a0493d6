"""The HL7 results outbox: an ORU^R01 per final report and per addendum, written in the report's transaction,
and the bookkeeping of the sender that delivers them (claims, outcomes, backoff, destination outages).

The outbox row holds the data the message is built from as JSON; building and sending HL7 is the gateway's
job (``gateways/hl7/sender.py``). Delivery is strictly in id order per (destination, patient): only the
oldest pending row of a pair can be claimed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from telenet.domain.access import Actor, Role
from telenet.domain.errors import Forbidden, Invalid
from telenet.services.events import emit
from telenet.services.hub import Hub, read_use_case
from telenet.store.models import (
    CriticalFinding,
    DicomStudy,
    HL7DeadLetter,
    HL7Destination,
    HL7InboundMessage,
    HL7OutboxItem,
    Institution,
    Patient,
    Report,
    Request,
    User,
)

log = logging.getLogger(__name__)

STATUSES = ("pending", "delivered", "dead")

_enqueued = [0]  # results queued by this process: lets the sender ignore the commits that queued nothing


def enqueued() -> int:
    """How many results this process has queued so far (a cheap "anything new?" for the sender)."""
    return _enqueued[0]


def mark_enqueued() -> None:
    """Another kind of outbox row (order status) was queued by this process: the sender should look."""
    _enqueued[0] += 1


def control_id(outbox_id: int) -> str:
    """MSH-10 of the ORU for outbox row ``outbox_id``: the same on every attempt, so the HIS can spot repeats."""
    return f"TNR{outbox_id:012d}"


async def enqueue_result(hub: Hub, session: AsyncSession, request: Request, report: Report) -> None:
    """Queue the result (final report: status F; addendum: C, the corrected whole) for the requesting
    institution's HL7 destination, in the caller's transaction; an institution without one gets nothing."""
    inst = await _destination(session, request)
    if inst is None:
        return
    payload = await _result_payload(session, request, report)
    await _add(hub, session, request, inst, payload, report_id=report.id)


async def enqueue_critical(
    hub: Hub, session: AsyncSession, request: Request, finding: CriticalFinding, draft: Report | None
) -> None:
    """Queue a critical finding the moment it is raised, before any report is signed: an ORU^R01 with status
    P whose observations are the critical items (flagged), and the draft's text if there is one."""
    inst = await _destination(session, request)
    if inst is None:
        return
    payload = await _result_payload(session, request, draft)
    payload.update(
        {
            "status": "P",
            # Only the critical items go out before signing: the HIS never receives an unsigned draft.
            "findings": "",
            "impression": "",
            "ecg": None,
            "critical": True,
            "critical_items": list(finding.items),
            "critical_id": finding.id,
            "signer": {
                "id": (
                    await session.execute(select(User.username).where(User.id == finding.raised_by_id))
                ).scalar_one(),
                "name": finding.raised_by,
            },
            "signed_at": finding.raised_at.isoformat(),
            "preliminary_author": None,
        }
    )
    await _add(hub, session, request, inst, payload, report_id=draft.id if draft else None, critical_id=finding.id)


async def _destination(session: AsyncSession, request: Request) -> Institution | None:
    # Read from the table, not the registry snapshot: an HIS endpoint (host, port) is operational configuration
    # that operators change in place, and a result must go where the endpoint is now.
    inst = await session.get(Institution, request.requesting_institution_id)
    assert inst is not None
    if not inst.hl7_host or not inst.hl7_port:
        log.info(
            "hl7: %s has no HL7 destination; the result of request %s (%s) is not sent by HL7",
            inst.code,
            request.id,
            request.accession_number,
        )
        return None
    return inst


async def _add(
    hub: Hub,
    session: AsyncSession,
    request: Request,
    inst: Institution,
    payload: dict[str, Any],
    *,
    report_id: int | None,
    critical_id: int | None = None,
) -> None:
    assert inst.hl7_host is not None and inst.hl7_port is not None
    payload["charset"] = inst.hl7_charset or "UTF-8"
    item = HL7OutboxItem(
        request_id=request.id,
        report_id=report_id,
        critical_id=critical_id,
        institution_id=inst.id,
        institution_path=inst.path,
        destination_host=inst.hl7_host,
        destination_port=inst.hl7_port,
        receiving_facility=inst.hl7_facility or inst.code,
        patient_key=str(request.patient_id),
        message_control_id="",
        status="pending",
        result_status=payload["status"],
        payload=payload,
        attempts=0,
        created_at=hub.clock.now(),
    )
    session.add(item)
    await session.flush()
    item.message_control_id = control_id(item.id)
    _enqueued[0] += 1


async def _result_payload(session: AsyncSession, request: Request, report: Report | None) -> dict[str, Any]:
    """What the ORU is built from; ``report`` None for a critical finding raised from the claim alone."""
    # The technician (技师) who acquired the exam: OperatorsName of the request's first study (OBR-34), read
    # with the patient (no statement of its own on the signing path).
    operators_of_study = (
        select(DicomStudy.operators_name)
        .where(DicomStudy.request_id == request.id, DicomStudy.operators_name.is_not(None))
        .order_by(DicomStudy.id)
        .limit(1)
        .scalar_subquery()
    )
    patient, operators = (
        await session.execute(select(Patient, operators_of_study).where(Patient.id == request.patient_id))
    ).one()
    addendum = report is not None and report.status == "addendum"
    final = report
    if addendum:
        found = (
            await session.execute(select(Report).where(Report.request_id == request.id, Report.status == "final"))
        ).scalar_one_or_none()
        final = found or report
    signer_username = (
        (await session.execute(select(User.username).where(User.id == report.author_id))).scalar_one()
        if report is not None
        else ""
    )
    info = (
        await session.execute(
            select(HL7InboundMessage.order_info)
            .where(HL7InboundMessage.request_id == request.id, HL7InboundMessage.order_info.is_not(None))
            .order_by(HL7InboundMessage.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none() or {}
    names = info.get("patient_name") or {}
    same_name = names.get("display") == patient.name
    procedure = info.get("procedure") or {
        "code": request.modality or request.kind.upper(),
        "text": " ".join(p for p in (request.modality, request.body_part) if p) or request.kind,
    }
    signed_at = (report.signed_at or report.created_at) if report is not None else request.updated_at
    preliminary_author = None
    if final is not None and final.preliminary_author_id and final.preliminary_author_id != final.author_id:
        preliminary_author = {
            "id": (
                await session.execute(select(User.username).where(User.id == final.preliminary_author_id))
            ).scalar_one(),
            "name": final.preliminary_author_name,
        }
    ordering = (
        {"id": request.ordering_clinician_id, "name": request.ordering_clinician_name}
        if request.ordering_clinician_name
        else info.get("ordering_clinician")
    )
    return {
        "request_id": request.id,
        "report_id": report.id if report is not None else None,
        "accession_number": request.accession_number,
        "placer_order_number": info.get("placer_order_number"),
        "study_instance_uid": request.study_instance_uid,
        "kind": request.kind,
        "modality": request.modality,
        "procedure": procedure,
        "patient": {
            "id": patient.his_id,
            "name": patient.name,
            "family": names.get("family", "") if same_name else patient.name,
            "given": names.get("given", "") if same_name else "",
            "sex": patient.sex,
            "birth_date": patient.birth_date.isoformat() if patient.birth_date else None,
        },
        "status": "C" if addendum else "F",
        "findings": final.findings if final is not None else "",
        "impression": final.impression if final is not None else "",
        "critical": bool((final is not None and final.critical) or (report is not None and report.critical)),
        "critical_items": (list(final.critical_items or []) if final is not None else [])
        + (list(report.critical_items or []) if addendum and report is not None else []),
        "addendum_text": report.findings if addendum and report is not None else None,
        "ecg": final.structured if final is not None else None,
        "signer": {"id": signer_username, "name": report.author_name if report is not None else ""},
        "preliminary_author": preliminary_author,
        "technician": {"name": operators.split("\\")[0]} if operators else None,
        "ordering_clinician": ordering,
        "signed_at": signed_at.isoformat(),
        "observed_at": request.queued_at.isoformat() if request.queued_at else None,
    }


# ---------------------------------------------------------------------------------------------- the sender


@dataclass(frozen=True)
class OutboxClaim:
    """A row the sender holds a lease on: deliver it, then report the outcome with the same ``owner``."""

    id: int
    message_control_id: str
    destination_host: str
    destination_port: int
    receiving_facility: str
    patient_key: str
    payload: dict[str, Any]
    attempts: int


async def claim_due(hub: Hub, *, owner: str, now: datetime, lease_seconds: float, limit: int = 50) -> list[OutboxClaim]:
    """Lease the deliverable rows: the oldest pending row of each (destination, patient), when it is due and
    not leased. On PostgreSQL the candidates are locked ``FOR UPDATE SKIP LOCKED`` so that two senders
    never take the same row; the lease keeps it theirs while the message is on the wire (outside any
    transaction)."""
    # One statement: UPDATE … WHERE id IN (the due heads) RETURNING the claimed rows. The candidates are an
    # alias of the table, so that the subquery is not correlated to the UPDATE's own row.
    candidate = aliased(HL7OutboxItem)
    older = aliased(HL7OutboxItem)
    head = (
        select(func.min(older.id))
        .where(
            older.status == "pending",
            older.destination_host == candidate.destination_host,
            older.destination_port == candidate.destination_port,
            older.patient_key == candidate.patient_key,
        )
        .scalar_subquery()
    )
    due = (
        select(candidate.id)
        .where(
            candidate.status == "pending",
            or_(candidate.next_attempt_at.is_(None), candidate.next_attempt_at <= now),
            or_(candidate.lease_until.is_(None), candidate.lease_until < now),
            candidate.id == head,
        )
        .order_by(candidate.id)
        .limit(limit)
    )
    if hub.dialect == "postgresql":
        due = due.with_for_update(skip_locked=True, of=candidate)
    lease = now + timedelta(seconds=lease_seconds)
    table = HL7OutboxItem.__table__
    statement = (
        update(HL7OutboxItem)
        .where(HL7OutboxItem.id.in_(due.scalar_subquery()))
        .values(lease_owner=owner, lease_until=lease, attempts=HL7OutboxItem.attempts + 1, last_attempt_at=now)
        .returning(
            table.c.id,
            table.c.message_control_id,
            table.c.destination_host,
            table.c.destination_port,
            table.c.receiving_facility,
            table.c.patient_key,
            table.c.payload,
            table.c.attempts,
        )
        .execution_options(synchronize_session=False)
    )
    async with hub.sessions() as session:
        rows = (await session.execute(statement)).all()
        await session.commit()
    return sorted(
        (
            OutboxClaim(
                int(r.id),
                r.message_control_id,
                r.destination_host,
                int(r.destination_port),
                r.receiving_facility,
                r.patient_key,
                dict(r.payload),
                int(r.attempts),
            )
            for r in rows
        ),
        key=lambda claim: claim.id,
    )


async def mark_delivered(hub: Hub, claim: OutboxClaim, *, owner: str) -> bool:
    """The HIS answered AA for this message's MSH-10; False when the lease was lost meanwhile."""
    async with hub.sessions() as session:
        result = await session.execute(
            update(HL7OutboxItem)
            .where(HL7OutboxItem.id == claim.id, HL7OutboxItem.lease_owner == owner)
            .values(
                status="delivered",
                delivered_at=hub.clock.now(),
                lease_owner=None,
                lease_until=None,
                last_error=None,
            )
        )
        await session.commit()
    return getattr(result, "rowcount", 0) == 1


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    backoff_seconds: float
    backoff_max_seconds: float

    def delay(self, attempts: int) -> float:
        """Exponential: ``backoff_seconds`` after the first failure, doubled each time, capped."""
        return float(min(self.backoff_seconds * 2 ** max(attempts - 1, 0), self.backoff_max_seconds))


async def mark_failed(
    hub: Hub,
    claim: OutboxClaim,
    *,
    owner: str,
    error: str,
    policy: RetryPolicy,
    refused: bool = False,
    message: bytes | None = None,
    attempted: bool = True,
) -> str:
    """Record a failed attempt: retried later with backoff, or dead-lettered when the HIS refused it (AR,
    ``refused``) or it ran out of attempts. ``attempted=False`` postpones a claimed row that was not tried
    (its destination just failed) without spending one of its attempts. Returns the row's new status."""
    now = hub.clock.now()
    async with hub.sessions() as session:
        item = await session.get(HL7OutboxItem, claim.id)
        if item is None or item.lease_owner != owner or item.status != "pending":
            return item.status if item else "gone"
        item.lease_owner = item.lease_until = None
        item.last_error = error
        if not attempted:
            item.attempts = max(item.attempts - 1, 0)
            item.next_attempt_at = now + timedelta(seconds=policy.delay(max(item.attempts, 1)))
            await session.commit()
            return item.status
        if refused or item.attempts >= policy.max_attempts:
            reason = error if refused else f"gave up after {item.attempts} attempts: {error}"
            item.status = "dead"
            item.last_error = reason
            session.add(
                HL7DeadLetter(
                    direction="outbound",
                    raw=message or b"",
                    reason=reason,
                    received_at=now,
                    peer=f"{item.destination_host}:{item.destination_port}"[:64],
                    facility=item.receiving_facility,
                    message_control_id=item.message_control_id,
                    institution_id=item.institution_id,
                    institution_path=item.institution_path,
                    outbox_id=item.id,
                    replays=0,
                )
            )
            log.warning("hl7: ORU %s dead-lettered: %s", item.message_control_id, reason)
        else:
            item.next_attempt_at = now + timedelta(seconds=policy.delay(item.attempts))
        await session.commit()
        return item.status


async def release_leases(hub: Hub, owner: str | None) -> None:
    """A sender that stops hands its rows back at once. With ``owner`` None every lease is released: what a
    sender does when it takes over the job's exclusive lock, since any other holder of a lease is then a
    process that died (its leases would otherwise keep its rows for the rest of the lease)."""
    condition = HL7OutboxItem.lease_owner.is_not(None) if owner is None else HL7OutboxItem.lease_owner == owner
    async with hub.sessions() as session:
        await session.execute(
            update(HL7OutboxItem)
            .where(condition, HL7OutboxItem.status == "pending")
            .values(lease_owner=None, lease_until=None)
        )
        await session.commit()


async def next_due_at(hub: Hub) -> datetime | None:
    """When the earliest backed-off row becomes due (the sender sleeps until then, or until woken)."""
    async with hub.reader() as session:
        value = (
            await session.execute(
                select(func.min(HL7OutboxItem.next_attempt_at)).where(HL7OutboxItem.status == "pending")
            )
        ).scalar_one_or_none()
    moment: datetime | None = value
    return moment


async def destination_failed(hub: Hub, host: str, port: int, error: str) -> bool:
    """A destination could not be reached or did not answer. The first failure of an outage raises the
    alert (an ``hl7.destination_down`` event and a log line); returns whether this call raised it."""
    now = hub.clock.now()
    async with hub.sessions() as session:
        dest = await _destination_for_update(session, hub, host, port)
        dest.last_error = error
        dest.last_failure_at = now
        first = dest.down_since is None
        if first:
            dest.down_since = now
            dest.outages += 1
            log.error("hl7: destination %s:%s is down (%s); results wait in the outbox", host, port, error)
            await _alert(session, hub, host, port, "hl7.destination_down", {"error": error, "since": now.isoformat()})
        await session.commit()
    if first:
        hub.notify_committed()
    return first


async def destination_ok(hub: Hub, host: str, port: int) -> bool:
    """A destination answered; ends its outage (one ``hl7.destination_recovered`` event) if it was in one."""
    now = hub.clock.now()
    async with hub.sessions() as session:
        dest = await _destination_for_update(session, hub, host, port)
        dest.last_success_at = now
        since = dest.down_since
        if since is not None:
            dest.down_since = None
            log.warning("hl7: destination %s:%s recovered after %s", host, port, now - since)
            await _alert(
                session,
                hub,
                host,
                port,
                "hl7.destination_recovered",
                {"down_since": since.isoformat(), "down_seconds": round((now - since).total_seconds(), 1)},
            )
        await session.commit()
    if since is not None:
        hub.notify_committed()
    return since is not None


async def _destination_for_update(session: AsyncSession, hub: Hub, host: str, port: int) -> HL7Destination:
    values = {"host": host, "port": port, "outages": 0}
    insert = pg_insert if hub.dialect == "postgresql" else sqlite_insert
    await session.execute(insert(HL7Destination).values(**values).on_conflict_do_nothing())
    query = select(HL7Destination).where(HL7Destination.host == host, HL7Destination.port == port)
    if hub.dialect == "postgresql":
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one()


async def _alert(session: AsyncSession, hub: Hub, host: str, port: int, name: str, data: dict[str, Any]) -> None:
    codes = (
        (
            await session.execute(
                select(Institution.code).where(Institution.hl7_host == host, Institution.hl7_port == port)
            )
        )
        .scalars()
        .all()
    )
    await emit(
        session,
        hub,
        name,
        [f"requests:{code}" for code in codes],
        {"destination": f"{host}:{port}", "institutions": list(codes), **data},
    )


# ----------------------------------------------------------------------------------------------- the backlog


def outbox_view(item: HL7OutboxItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "message_control_id": item.message_control_id,
        "request_id": item.request_id,
        "report_id": item.report_id,
        "accession_number": item.payload.get("accession_number"),
        "result_status": item.result_status,
        "destination": f"{item.destination_host}:{item.destination_port}",
        "receiving_facility": item.receiving_facility,
        "status": item.status,
        "attempts": item.attempts,
        "next_attempt_at": _iso(item.next_attempt_at),
        "last_attempt_at": _iso(item.last_attempt_at),
        "last_error": item.last_error,
        "created_at": _iso(item.created_at),
        "delivered_at": _iso(item.delivered_at),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


async def backlog(
    hub: Hub, actor: Actor, *, status: str = "pending", limit: int = 100, after_id: int | None = None
) -> dict[str, Any]:
    """The outbox of the admin's subtree in delivery order (oldest first; ``status`` pending by default:
    the backlog), with the state of each destination that has messages waiting."""
    if actor.role is not Role.ADMIN:
        raise Forbidden("only admins see the HL7 outbox", code="role")
    if status not in (*STATUSES, "all"):
        raise Invalid(f"status is one of {', '.join(STATUSES)} or all", code="bad-parameter")
    async with read_use_case(hub, actor, "hl7.outbox.read", "hl7_outbox") as uow:
        session = uow.session
        uow.audit(object_path=actor.institution_path)
        scope = HL7OutboxItem.institution_path.startswith(actor.institution_path)
        query = select(HL7OutboxItem).where(scope)
        if status != "all":
            query = query.where(HL7OutboxItem.status == status)
        if after_id:
            query = query.where(HL7OutboxItem.id > after_id)
        rows = (await session.execute(query.order_by(HL7OutboxItem.id).limit(limit))).scalars().all()
        counts = (
            await session.execute(
                select(HL7OutboxItem.destination_host, HL7OutboxItem.destination_port, func.count())
                .where(scope, HL7OutboxItem.status == "pending")
                .group_by(HL7OutboxItem.destination_host, HL7OutboxItem.destination_port)
            )
        ).all()
        destinations = []
        for host, port, count in counts:
            dest = await session.get(HL7Destination, (host, port))
            destinations.append(
                {
                    "destination": f"{host}:{port}",
                    "pending": count,
                    "down_since": _iso(dest.down_since) if dest else None,
                    "last_error": dest.last_error if dest else None,
                    "last_success_at": _iso(dest.last_success_at) if dest else None,
                }
            )
        return {
            "items": [outbox_view(r) for r in rows],
            "destinations": destinations,
            "next_after_id": rows[-1].id if len(rows) == limit else None,
        }


__all__ = [
    "OutboxClaim",
    "RetryPolicy",
    "backlog",
    "claim_due",
    "control_id",
    "destination_failed",
    "destination_ok",
    "enqueue_result",
    "enqueued",
    "mark_delivered",
    "mark_failed",
    "next_due_at",
    "release_leases",
]
