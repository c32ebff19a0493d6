"""MPPS (Modality Performed Procedure Step): a modality's exact "study complete" signal. N-CREATE links the
study to its request in advance (refused when the study's patient contradicts the request's); N-SET COMPLETED
completes the request once every instance it lists is present; DISCONTINUED is recorded and shown."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telenet.domain.access import Actor, Role
from telenet.domain.errors import Conflict, Invalid, NotFound
from telenet.domain.identity import PatientFacts
from telenet.services import study_links
from telenet.services.access import center_of, require_role
from telenet.services.hub import Hub, use_case
from telenet.services.transitions import apply_fields
from telenet.store.models import DicomStudy, Institution, Mpps, Request

log = logging.getLogger(__name__)

MPPS_STATES = ("IN PROGRESS", "COMPLETED", "DISCONTINUED")


@dataclass(frozen=True)
class MppsRecord:
    sop_instance_uid: str
    status: str
    study_instance_uid: str | None = None
    accession_number: str | None = None
    modality: str | None = None
    referenced_sop_uids: tuple[str, ...] = ()
    discontinuation_reason: str | None = None
    # The MPPS relationship module's patient (PatientID, PatientName, PatientBirthDate, PatientSex).
    patient: PatientFacts | None = None


async def mpps_create(hub: Hub, actor: Actor, record: MppsRecord) -> None:
    """N-CREATE: a procedure step begins (IN PROGRESS); it links its study to the request in advance."""
    require_role(actor, Role.INTEGRATION, action="report a performed procedure step")
    if record.status != "IN PROGRESS":
        raise Invalid("an MPPS is created IN PROGRESS", code="bad-mpps")
    async with use_case(hub, actor, "dicom.mpps.create", "dicom_mpps", record.sop_instance_uid) as uow:
        session = uow.session
        uow.audit(object_path=actor.institution_path)
        taken = (await session.execute(select(Mpps.id).where(Mpps.sop_instance_uid == record.sop_instance_uid))).first()
        if taken is not None:
            raise Conflict("this MPPS instance exists already", code="duplicate-mpps")
        now = hub.clock.now()
        request = (
            await study_links.request_by_accession(session, actor, record.accession_number)
            if record.accession_number
            else None
        )
        if request is not None and record.patient is not None:
            contradicted = await study_links.patient_contradictions(session, request, record.patient)
            if contradicted:
                # Not linked: the study waits in the reconciliation list, where a coordinator decides.
                log.warning(
                    "MPPS %s names accession %s but its patient differs in %s: not linked",
                    record.sop_instance_uid,
                    record.accession_number,
                    ", ".join(contradicted),
                )
                uow.audit(detail={"patient_mismatch": contradicted, "request_id": request.id})
                request = None
        session.add(
            Mpps(
                sop_instance_uid=record.sop_instance_uid,
                status=record.status,
                calling_ae=actor.username.removeprefix("dicom:")[:16],
                source_institution_id=actor.institution_id,
                study_instance_uid=record.study_instance_uid,
                accession_number=record.accession_number,
                request_id=request.id if request else None,
                modality=record.modality,
                referenced_sop_uids=list(record.referenced_sop_uids),
                created_at=now,
                updated_at=now,
            )
        )
        if request is not None and record.study_instance_uid:
            await _link_study_stub(session, hub, actor, request, record.study_instance_uid, now)


async def _link_study_stub(
    session: AsyncSession, hub: Hub, actor: Actor, request: Request, study_uid: str, now: datetime
) -> None:
    """Make the study known before its instances arrive, so those without an accession number still match."""
    study = (
        await session.execute(select(DicomStudy).where(DicomStudy.study_instance_uid == study_uid))
    ).scalar_one_or_none()
    if study is None:
        study = study_links.new_study(actor, study_uid, now, accession_number=request.accession_number)
        session.add(study)
        await session.flush()
    if study.request_id is None:
        await study_links.link_to_request(session, hub, study, request, "mpps", now, actor.username)


async def mpps_set(hub: Hub, actor: Actor, record: MppsRecord) -> str | None:
    """N-SET: the step is COMPLETED (listing its instances) or DISCONTINUED; a final step cannot change.

    When COMPLETED and every listed instance is present, the request is complete (signal ``mpps``);
    otherwise the study waits and the last listed instance to arrive completes it. Returns the signal."""
    require_role(actor, Role.INTEGRATION, action="report a performed procedure step")
    if record.status not in MPPS_STATES:
        raise Invalid(f"PerformedProcedureStepStatus must be one of {', '.join(MPPS_STATES)}", code="bad-mpps")
    completion: study_links.Completion | None = None
    async with use_case(hub, actor, "dicom.mpps.set", "dicom_mpps", record.sop_instance_uid) as uow:
        session = uow.session
        mpps = (
            await session.execute(select(Mpps).where(Mpps.sop_instance_uid == record.sop_instance_uid))
        ).scalar_one_or_none()
        if mpps is None:
            raise NotFound(f"no MPPS {record.sop_instance_uid}")
        if mpps.source_institution_id != actor.institution_id:
            from telenet.domain.errors import Forbidden

            raise Forbidden("this MPPS was created by another institution", code="scope")
        uow.audit(object_path=actor.institution_path)
        if mpps.status != "IN PROGRESS":
            raise Conflict(f"the procedure step is {mpps.status} and may no longer be updated", code="mpps-final")
        mpps.status = record.status
        mpps.updated_at = hub.clock.now()
        if record.referenced_sop_uids:
            mpps.referenced_sop_uids = list(record.referenced_sop_uids)
        await session.flush()
        if mpps.status == "DISCONTINUED":
            await _discontinued(session, hub, mpps, record.discontinuation_reason)
        if mpps.status == "COMPLETED" and mpps.study_instance_uid:
            study = (
                await session.execute(
                    select(DicomStudy).where(DicomStudy.study_instance_uid == mpps.study_instance_uid)
                )
            ).scalar_one_or_none()
            if study is not None and study.request_id is not None:
                request = await session.get(Request, study.request_id)
                if request is not None and request.state == "ordered":
                    if await study_links.mpps_satisfied(session, study):
                        completion = study_links.Completion(request.id, "mpps", [study.id])
                    else:
                        study.mpps_waiting = True
    if completion is not None:
        return await study_links.complete_request(hub, completion)
    return None


async def _discontinued(session: AsyncSession, hub: Hub, mpps: Mpps, reason: str | None) -> None:
    """MPPS DISCONTINUED: the request stays ordered (nothing was read; the modality may start again) and the
    clinic sees why the step was stopped."""
    if mpps.request_id is None:
        return
    request = await session.get(Request, mpps.request_id)
    if request is None or request.state != "ordered":
        return
    text = reason or "discontinued at the modality (no reason given)"
    center, _ = await center_of(session, request.center_id)
    inst_code = (
        await session.execute(select(Institution.code).where(Institution.id == request.requesting_institution_id))
    ).scalar_one()
    await apply_fields(
        hub, session, request, center.code, inst_code, "request.procedure_discontinued",
        {"reason": text, "mpps": mpps.sop_instance_uid}, discontinued_reason=text[:500],
    )  # fmt: skip
