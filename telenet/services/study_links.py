"""Studies and their requests: which request a study belongs to (AccessionNumber within the sender's subtree,
else a StudyInstanceUID already known), the link with its event and forwarding, and completeness: an ECG
instance completes an ``ecg`` request at once; an imaging request completes when an MPPS COMPLETED lists only
instances that are present, or after a quiet time. Used by the C-STORE index (``studies``), MPPS
(``modality``), reconciliation (``study_views``) and the routing hook."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from telenet.domain.access import Actor, Role
from telenet.domain.errors import Conflict
from telenet.domain.identity import PatientFacts, contradictions, parse_compact_date
from telenet.domain.tiers import is_within
from telenet.services import forwarding
from telenet.services.access import center_of
from telenet.services.events import emit, request_topics
from telenet.services.hub import Hub, use_case
from telenet.store.models import Center, DicomInstance, DicomStudy, Institution, Mpps, Patient, Request

log = logging.getLogger(__name__)

SIGNALS = ("mpps", "quiet-time", "ecg")


# --------------------------------------------------------------------------------------------------
# Who is calling: a gateway acts as its institution's integration account
# --------------------------------------------------------------------------------------------------


def gateway_actor(institution: Institution, ae_title: str | None, remote_addr: str | None = None) -> Actor:
    """The actor of a DICOM peer: integration role at the institution its AE title is registered to."""
    name = f"dicom:{ae_title}" if ae_title else "dicom:gateway"
    return Actor(
        user_id=0,
        username=name,
        role=Role.INTEGRATION,
        institution_id=institution.id,
        institution_code=institution.code,
        institution_path=institution.path,
        display_name=name,
        remote_addr=remote_addr,
    )


def ae_of(actor: Actor) -> str:
    """The calling AE title of a DICOM gateway actor (``dicom:<AE>``), as the index stores it."""
    return actor.username.removeprefix("dicom:")[:16]


def new_study(actor: Actor, study_uid: str, now: datetime, **fields: Any) -> DicomStudy:
    """A study row as its first arrival makes it (an instance, or an MPPS before any instance): sent by the
    actor's institution, empty, not yet waiting for an MPPS."""
    return DicomStudy(
        study_instance_uid=study_uid,
        source_institution_id=actor.institution_id,
        source_path=actor.institution_path,
        calling_ae=ae_of(actor),
        modalities=[],
        instance_count=0,
        total_bytes=0,
        first_received_at=now,
        last_received_at=now,
        mpps_waiting=False,
        **fields,
    )


# --------------------------------------------------------------------------------------------------
# Matching a study to its request, and linking it
# --------------------------------------------------------------------------------------------------


async def request_by_accession(session: AsyncSession, actor: Actor, accession: str) -> Request | None:
    """The request with this accession number if the sender may send data for it (its own subtree)."""
    request = (
        await session.execute(select(Request).where(Request.accession_number == accession.strip()))
    ).scalar_one_or_none()
    if request is None or request.kind == "consultation":
        return None
    if not is_within(request.requesting_path, actor.institution_path):
        log.warning("accession %s sent by %s belongs to another institution", accession, actor.username)
        return None
    return request


async def request_by_study_uid(session: AsyncSession, actor: Actor, study_uid: str) -> Request | None:
    request = (
        await session.execute(select(Request).where(Request.study_instance_uid == study_uid).limit(1))
    ).scalar_one_or_none()
    if request is None or not is_within(request.requesting_path, actor.institution_path):
        return None
    return request


async def patient_contradictions(session: AsyncSession, request: Request, found: PatientFacts) -> list[str]:
    """The fields in which a study's patient contradicts the request's (see telenet.domain.identity)."""
    patient = await session.get(Patient, request.patient_id)
    if patient is None:
        return []
    expected = PatientFacts(patient.his_id, patient.name, patient.birth_date, patient.sex)
    return contradictions(expected, found)


def study_patient(study: DicomStudy) -> PatientFacts:
    return PatientFacts(
        study.patient_id, study.patient_name, parse_compact_date(study.patient_birth_date), study.patient_sex
    )


async def link_to_request(
    session: AsyncSession, hub: Hub, study: DicomStudy, request: Request, how: str, now: datetime, by: str
) -> None:
    study.request_id = request.id
    study.matched_by = how
    study.linked_at = now
    study.linked_by = by
    await session.flush()
    center, _ = await center_of(session, request.center_id)
    inst_code = (
        await session.execute(select(Institution.code).where(Institution.id == request.requesting_institution_id))
    ).scalar_one()
    await emit(
        session,
        hub,
        "study.received",
        request_topics(request.id, center.code, inst_code),
        {
            "request_id": request.id,
            "accession_number": request.accession_number,
            "study_instance_uid": study.study_instance_uid,
            "matched_by": how,
        },
        request_id=request.id,
    )
    if request.state not in ("ordered", "cancelled"):
        await forwarding.enqueue(session, hub, study, request, center)


# --------------------------------------------------------------------------------------------------
# Completeness: a request whose data is complete is queued
# --------------------------------------------------------------------------------------------------


@dataclass
class Completion:
    request_id: int
    signal: str
    study_ids: list[int] = field(default_factory=list)


async def mpps_satisfied(session: AsyncSession, study: DicomStudy) -> bool:
    listed: set[str] = set()
    for uids in (
        await session.execute(
            select(Mpps.referenced_sop_uids).where(
                Mpps.study_instance_uid == study.study_instance_uid, Mpps.status == "COMPLETED"
            )
        )
    ).scalars():
        listed.update(uids or [])
    if not listed:
        return False
    present = (
        await session.execute(
            select(func.count()).select_from(DicomInstance).where(DicomInstance.sop_instance_uid.in_(sorted(listed)))
        )
    ).scalar_one()
    return int(present) == len(listed)


async def complete_request(hub: Hub, completion: Completion) -> str | None:
    """``ordered`` → ``queued`` through the data-complete command (``hub.follow_ups.data_complete``, which
    also queues the forward), then mark the studies complete."""
    async with hub.sessions() as session:
        request = await session.get(Request, completion.request_id)
        if request is None or request.state != "ordered" or request.data_completed_at is not None:
            return None
        requester = await session.get(Institution, request.requesting_institution_id)
        assert requester is not None
        actor = gateway_actor(requester, None)
    try:
        await hub.follow_ups.data_complete(hub, actor, completion.request_id, completion.signal)
    except Conflict:
        return None  # another signal (or a person) was first
    async with use_case(hub, None, "dicom.completed", "request", str(completion.request_id)) as uow:
        session = uow.session
        now = hub.clock.now()
        studies = (
            (await session.execute(select(DicomStudy).where(DicomStudy.request_id == completion.request_id)))
            .scalars()
            .all()
        )
        # Forwarding was queued by requests.data_complete itself, in the transaction that queued the request.
        for study in studies:
            study.completed_at = now
            study.completed_by = completion.signal
            study.mpps_waiting = False
    log.info("request %s data complete (%s)", completion.request_id, completion.signal)
    return completion.signal


async def complete_quiet_studies(hub: Hub, now: datetime | None = None) -> int:
    """Imaging requests still ``ordered`` whose studies got no instance for the quiet time → ``queued``."""
    now = now or hub.clock.now()
    cutoff = now - timedelta(seconds=hub.options.study_quiet_seconds)
    async with hub.sessions() as session:
        ids = (
            (
                await session.execute(
                    select(DicomStudy.request_id)
                    .join(Request, Request.id == DicomStudy.request_id)
                    .where(
                        Request.state == "ordered",
                        Request.kind == "imaging",
                        Request.data_completed_at.is_(None),  # complete, waiting for consent
                        DicomStudy.instance_count > 0,
                    )
                    .group_by(DicomStudy.request_id)
                    .having(func.max(DicomStudy.last_received_at) <= cutoff)
                    .limit(200)
                )
            )
            .scalars()
            .all()
        )
    done = 0
    for request_id in ids:
        if request_id is not None and await complete_request(hub, Completion(request_id, "quiet-time")):
            done += 1
    return done


# --------------------------------------------------------------------------------------------------
# The routing hook: a request now sits at a center
# --------------------------------------------------------------------------------------------------


async def on_routed(hub: Hub, session: AsyncSession, request: Request, center: Center) -> None:
    """A request now sits at ``center`` (first route or escalation): forward its studies that are present
    if the center has a DICOM node. Runs inside the caller's transaction."""
    if not center.dicom_ae_title or not center.dicom_host or not center.dicom_port:
        return
    if request.kind == "consultation" or request.state in ("ordered", "cancelled"):
        return  # an ordered request is forwarded when its study is complete
    studies = (await session.execute(select(DicomStudy).where(DicomStudy.request_id == request.id))).scalars().all()
    for study in studies:
        if study.instance_count > 0:
            await forwarding.enqueue(session, hub, study, request, center)
