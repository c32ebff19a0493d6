"""The request's view, read after a command commits or for a page: patient, center, route history, reports
(drafts only for the reading side), critical findings, the order's shared identifiers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from telenet.domain.access import Actor, Role
from telenet.domain.lifecycle import RequestState, allowed_actions
from telenet.domain.patients import masked_national_id
from telenet.services.access import center_of
from telenet.services.hub import Hub, UnitOfWork
from telenet.services.registry_snapshot import RegistrySnapshot
from telenet.store.models import (
    Center,
    CriticalFinding,
    Institution,
    Participant,
    Patient,
    Report,
    Request,
    RouteStep,
    User,
)


async def committed_view(uow: UnitOfWork, actor: Actor, request: Request) -> dict[str, Any]:
    """Commit the command, then read the request's view on a read session: the write transaction is not held
    open for it. Gateways (``hub.build_views`` off) get the ids only; they never show a view."""
    await uow.commit()
    if not uow.hub.build_views:
        return {"id": request.id, "accession_number": request.accession_number, "state": request.state}
    return await view_of(uow.hub, actor, request.id)


async def view_of(hub: Hub, actor: Actor, request_id: int) -> dict[str, Any]:
    """The view of a request a command of ``actor`` has just committed, on a read session (not audited as a
    read: the command's own audit row covers it)."""
    snapshot = await hub.registry.get() if hub.registry is not None else None
    async with hub.reader() as session:
        row = (await session.execute(_WITH_PARTIES.where(Request.id == request_id))).one()
        return await request_view(
            session, actor, row[0], snapshot=snapshot, parties=(row[1], row[2], row[3]), present=tuple(row[4:7])
        )


_CLAIMER = aliased(User)
# The request with its patient, requesting institution and claimer's username: one statement, not four; and
# whether it has reports, critical findings and participants at all (a new request has none of them: their
# three statements are then not sent).
_WITH_PARTIES = (
    select(
        Request,
        Patient,
        Institution,
        _CLAIMER.username,
        exists().where(Report.request_id == Request.id),
        exists().where(CriticalFinding.request_id == Request.id),
        exists().where(Participant.request_id == Request.id, Participant.removed_at.is_(None)),
    )
    .join(Patient, Patient.id == Request.patient_id)
    .join(Institution, Institution.id == Request.requesting_institution_id)
    .outerjoin(_CLAIMER, _CLAIMER.id == Request.claimed_by_id)
)


async def request_view(
    session: AsyncSession,
    actor: Actor,
    request: Request,
    *,
    snapshot: RegistrySnapshot | None = None,
    parties: tuple[Patient, Institution, str | None] | None = None,
    present: tuple[bool, ...] = (True, True, True),
) -> dict[str, Any]:
    """The whole request as the API shows it: patient, center, route history, reports, critical findings.
    ``snapshot``: the center from the registry in memory; ``parties``: patient, requester and claimer
    already read with the request; ``present``: whether it has reports, critical findings and participants
    (read with it in the same snapshot), each read only if so."""
    has_reports, has_criticals, has_participants = present
    known = (
        snapshot.center(request.center_id) if snapshot is not None and request.center_id in snapshot.centers else None
    )
    center, center_inst = known if known is not None else await center_of(session, request.center_id)
    if parties is None:
        patient = await session.get(Patient, request.patient_id)
        requester = await session.get(Institution, request.requesting_institution_id)
        claimer = await session.get(User, request.claimed_by_id) if request.claimed_by_id else None
        claimed_by = claimer.username if claimer else None
    else:
        patient, requester, claimed_by = parties
    assert patient is not None and requester is not None
    steps = (
        await session.execute(
            select(RouteStep, Center.code)
            .outerjoin(Center, Center.id == RouteStep.center_id)
            .where(RouteStep.request_id == request.id)
            .order_by(RouteStep.id)
        )
    ).all()
    reports: Sequence[Report] = []
    if has_reports:
        query = select(Report).where(Report.request_id == request.id).order_by(Report.id)
        reports = (await session.execute(query)).scalars().all()
    criticals: Sequence[Any] = []
    if has_criticals:
        found = (
            select(CriticalFinding, User.username)
            .outerjoin(User, User.id == CriticalFinding.acknowledged_by_id)
            .where(CriticalFinding.request_id == request.id)
            .order_by(CriticalFinding.id)
        )
        criticals = (await session.execute(found)).all()
    participants: Sequence[str] = []
    if has_participants:
        present_now = (
            select(User.username)
            .join(Participant, Participant.user_id == User.id)
            .where(Participant.request_id == request.id, Participant.removed_at.is_(None))
        )
        participants = (await session.execute(present_now)).scalars().all()
    now_state = RequestState(request.state)
    return {
        "id": request.id,
        "accession_number": request.accession_number,
        "kind": request.kind,
        "modality": request.modality,
        "body_part": request.body_part,
        "priority": request.priority,
        "clinical_question": request.clinical_question,
        "subspecialty": request.subspecialty,
        "scheduled_at": _iso(request.scheduled_at),
        "state": request.state,
        "allowed_actions": sorted(a.value for a in allowed_actions(request.kind, now_state)),
        "center": {
            "code": center.code,
            "name": center.name,
            "institution": center_inst.code,
            "tier": center_inst.tier,
        },
        "requesting_institution": {"code": requester.code, "name": requester.name, "tier": requester.tier},
        "requester": request.requester_name,
        "ordering_clinician": (
            {"id": request.ordering_clinician_id, "name": request.ordering_clinician_name}
            if request.ordering_clinician_name
            else None
        ),
        "patient": {
            "id": patient.his_id,
            "name": patient.name,
            "sex": patient.sex,
            "birth_date": patient.birth_date.isoformat() if patient.birth_date else None,
            "national_id_last4": patient.national_id_last4,
            "national_id_masked": masked_national_id(patient.national_id_last4),
        },
        "consent": (
            {"given_by": request.consent_given_by, "given_at": _iso(request.consent_given_at)}
            if request.consent_given_at
            else {"missing": True, "note": "知情同意 not recorded: the request waits in ordered until it is"}
        ),
        "order": _order_identifiers(request),
        "procedure_discontinued": request.discontinued_reason,
        "data_completed_at": _iso(request.data_completed_at),
        "due_at": _iso(request.due_at),
        "sla_breached_at": _iso(request.sla_breached_at),
        "claimed_by": claimed_by,
        "claim_expires_at": _iso(request.claim_expires_at),
        "data_completed_by": request.data_completed_by,
        "return": ({"reason": request.return_reason, "note": request.return_note} if request.return_reason else None),
        "escalations": request.escalations,
        "participants": list(participants),
        "timestamps": {
            name: _iso(getattr(request, f"{name}_at"))
            for name in ("ordered", "queued", "claimed", "final", "returned", "cancelled", "updated")
        },
        "route": [
            {
                "at": _iso(s.at),
                "action": s.action,
                "center": code,
                "reason": s.reason,
                "considered": s.considered,
                "by": s.actor,
            }
            for s, code in steps
        ],
        "reports": [
            report_view(r) for r in reports if r.status != "preliminary" or may_see_drafts(actor, request, center.code)
        ],
        "critical_findings": [critical_view(c, username) for c, username in criticals],
    }


def may_see_drafts(actor: Actor, request: Request, center_code: str) -> bool:
    """Unsigned drafts stay with the reading center's readers and coordinators: the requesting side (and any
    admin) only ever sees signed reports."""
    if request.claimed_by_id == actor.user_id:
        return True
    return actor.role in (Role.READER, Role.COORDINATOR) and center_code in actor.center_codes


def report_view(report: Report) -> dict[str, Any]:
    return {
        "id": report.id,
        "status": report.status,
        "version": report.version,
        "superseded_at": _iso(report.superseded_at),
        "preliminary_author": report.preliminary_author_name,
        "signer": report.author_name if report.signed_at else None,
        "findings": report.findings,
        "impression": report.impression,
        "critical": report.critical,
        "critical_items": report.critical_items,
        "structured": report.structured,
        "author": report.author_name,
        "created_at": _iso(report.created_at),
        "signed_at": _iso(report.signed_at),
        "digest": report.digest,
    }


def critical_view(finding: CriticalFinding, acknowledged_by: str | None) -> dict[str, Any]:
    """A critical finding; ``acknowledged_by`` is the username of the account that acknowledged it (the stable
    identity), ``acknowledged_by_name`` the name of that person as recorded at the acknowledgement."""
    return {
        "id": finding.id,
        "items": finding.items,
        "raised_at": _iso(finding.raised_at),
        "raised_by": finding.raised_by,
        "source": finding.source,
        "report_id": finding.report_id,
        "deadline_at": _iso(finding.deadline_at),
        "escalation_level": finding.escalation_level,
        "acknowledged_at": _iso(finding.acknowledged_at),
        "acknowledged_by": acknowledged_by,
        "acknowledged_by_name": finding.acknowledged_by,
        "read_back_by": finding.read_back_by,
        "read_back": finding.read_back,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _order_identifiers(request: Request) -> dict[str, Any]:
    """The identifiers the HIS, the worklist, the images, the MPPS and the ORU share (IHE SWF)."""
    return {
        "placer_order_number": request.placer_order_number,
        "filler_order_number": request.filler_order_number or request.accession_number,
        "requested_procedure_id": str(request.id),
        "scheduled_procedure_step_id": str(request.id),
        "study_instance_uid": request.study_instance_uid,
    }
