"""DICOM studies in the service layer: the index of received instances, and who is calling.

The DICOM gateway extracts plain records from what it received (it owns the files and pydicom) and calls
these use cases on the event loop. Which request a study belongs to, the link and completeness are in
``study_links``: AccessionNumber first (only requests of the sender's own subtree), else a StudyInstanceUID
already known (an earlier instance or an MPPS); anything else waits in the reconciliation list, and so does a
study whose patient (id, name, birth date, sex) contradicts the request's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from telenet.domain.access import Actor, Role
from telenet.domain.errors import Forbidden, Invalid
from telenet.domain.tiers import is_within
from telenet.services import forwarding
from telenet.services.access import require_role
from telenet.services.events import emit
from telenet.services.hub import AuditRecord, Hub, audit_values, use_case
from telenet.services.study_links import (
    Completion,
    ae_of,
    complete_request,
    gateway_actor,
    link_to_request,
    mpps_satisfied,
    new_study,
    patient_contradictions,
    request_by_accession,
    request_by_study_uid,
    study_patient,
)
from telenet.store.models import (
    AuditEntry,
    Center,
    DicomInstance,
    DicomSeries,
    DicomStudy,
    EcgMeasurement,
    Institution,
    InstitutionAETitle,
    Request,
)

log = logging.getLogger(__name__)

_RETRIES = 3  # concurrent first instances of one study race on its unique UID; the loser retries


# --------------------------------------------------------------------------------------------------
# Who is calling: a registered AE title acts as its institution's integration account
# --------------------------------------------------------------------------------------------------


async def ae_actor(hub: Hub, ae_title: str, remote_addr: str | None = None) -> Actor | None:
    """The actor of a calling AE title, or None when no institution has registered it."""
    async with hub.reader() as session:
        inst = (
            await session.execute(
                select(Institution)
                .join(InstitutionAETitle, InstitutionAETitle.institution_id == Institution.id)
                .where(InstitutionAETitle.ae_title == ae_title.strip())
            )
        ).scalar_one_or_none()
    return gateway_actor(inst, ae_title.strip(), remote_addr) if inst is not None else None


async def registered_ae_titles(hub: Hub) -> set[str]:
    """Every calling AE title registered to an institution: from the registry snapshot where the hub keeps one."""
    if hub.registry is not None:
        return set((await hub.registry.get()).ae_titles)
    async with hub.reader() as session:
        return set((await session.execute(select(InstitutionAETitle.ae_title))).scalars().all())


# --------------------------------------------------------------------------------------------------
# Records the gateway hands over
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EcgSummary:
    """What the gateway measured on an ECG waveform (Pan–Tompkins) and where it rendered the SVG/JSON."""

    heart_rate_bpm: float | None
    rr_ms_mean: float | None
    r_peak_count: int
    lead: str | None
    method: str
    sampling_hz: float | None
    duration_s: float | None
    leads: list[str]
    svg_path: str | None
    json_path: str | None
    error: str | None = None


@dataclass(frozen=True)
class InstanceRecord:
    """One received SOP instance as the index needs it: identifiers, decoded patient/study attributes, file."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    study_instance_uid: str
    series_instance_uid: str
    path: str
    size_bytes: int
    accession_number: str | None = None
    patient_name: str | None = None
    patient_id: str | None = None
    patient_birth_date: str | None = None
    patient_sex: str | None = None
    study_date: str | None = None
    study_time: str | None = None
    study_id: str | None = None
    study_description: str | None = None
    referring_physician: str | None = None
    operators_name: str | None = None
    modality: str | None = None
    series_number: int | None = None
    series_description: str | None = None
    body_part: str | None = None
    instance_number: int | None = None
    character_set: str | None = None
    ecg: EcgSummary | None = None


@dataclass(frozen=True)
class StoreOutcome:
    duplicate: bool
    study_instance_uid: str
    request_id: int | None
    matched_by: str | None
    completed: str | None = None
    existing_path: str | None = None


# --------------------------------------------------------------------------------------------------
# C-STORE: index one instance
# --------------------------------------------------------------------------------------------------


async def indexed_path(hub: Hub, sop_instance_uid: str) -> str | None:
    """The file of an already indexed instance (duplicates are answered without touching the disk)."""
    async with hub.reader() as session:
        return (
            await session.execute(select(DicomInstance.path).where(DicomInstance.sop_instance_uid == sop_instance_uid))
        ).scalar_one_or_none()


async def store_instance(hub: Hub, actor: Actor, record: InstanceRecord) -> StoreOutcome:
    """Index a received instance (its file is already in place) and match its study; idempotent per SOP UID.

    Completes an ``ecg`` request when this is its ECG, and an imaging request whose MPPS is now satisfied.
    """
    require_role(actor, Role.INTEGRATION, Role.REQUESTER, action="store DICOM instances")
    _check_record(record)
    for attempt in range(_RETRIES):
        try:
            outcome, completion = await _store_once(hub, actor, record)
            break
        except _Duplicate:
            duplicate = await _store_duplicate(hub, actor, record)
            if duplicate is not None:
                return duplicate
            if attempt == _RETRIES - 1:
                raise
        except IntegrityError:
            if attempt == _RETRIES - 1:
                raise
    if completion is not None:
        signal = await complete_request(hub, completion)
        return StoreOutcome(
            outcome.duplicate, outcome.study_instance_uid, outcome.request_id, outcome.matched_by, signal
        )
    return outcome


async def store_instances(hub: Hub, actor: Actor, records: Sequence[InstanceRecord]) -> list[StoreOutcome | Exception]:
    """Index many received instances (their files in place), in order, with the outcomes and audit rows that
    ``store_instance`` gives one by one; an instance that fails is its exception in the list.

    Each run of consecutive instances of one series (none an ECG, none indexed yet) is one use case with
    multi-row statements: a handful of statements for the run instead of nine per instance. Anything else,
    and a run that fails for any reason, goes through ``store_instance`` one instance at a time."""
    results: list[StoreOutcome | Exception] = []
    start = 0
    while start < len(records):
        end = start + 1
        key = (records[start].study_instance_uid, records[start].series_instance_uid)
        while end < len(records) and (records[end].study_instance_uid, records[end].series_instance_uid) == key:
            end += 1
        run = list(records[start:end])
        start = end
        if len(run) > 1 and all(r.ecg is None for r in run):
            try:
                results.extend(await _store_run(hub, actor, run))
                continue
            except Exception as exc:  # the run's transaction is rolled back: one at a time, with their errors
                log.debug("bulk index of %d instances fell back to one by one: %s", len(run), exc)
        for record in run:
            try:
                results.append(await store_instance(hub, actor, record))
            except Exception as exc:
                results.append(exc)
    return results


class _NotBulk(Exception):
    """The run is not for the bulk path (duplicates, mixed accessions): index it one instance at a time."""


async def _store_run(hub: Hub, actor: Actor, run: list[InstanceRecord]) -> list[StoreOutcome]:
    """The instances of one series in one transaction. Without an actor the use case audits nothing on a
    failure (the one-by-one retry does); the success rows, one per instance as store_instance writes, are
    added here."""
    require_role(actor, Role.INTEGRATION, Role.REQUESTER, action="store DICOM instances")
    uids = [r.sop_instance_uid for r in run]
    if len(set(uids)) != len(uids) or len({r.accession_number for r in run}) != 1:
        raise _NotBulk("duplicates or several accession numbers")
    for record in run:
        _check_record(record)
    async with use_case(hub, None, "dicom.store", "dicom_instance") as uow:
        session = uow.session
        known = (
            await session.execute(
                select(func.count()).select_from(DicomInstance).where(DicomInstance.sop_instance_uid.in_(uids))
            )
        ).scalar_one()
        if known:
            raise _NotBulk("some instances are indexed already")
        now = hub.clock.now()
        first = run[0]
        study, mismatch = await _study_for(session, hub, actor, first, now)
        for record in run[1:]:
            _fill_study(study, record)
        series = (
            await session.execute(
                select(DicomSeries).where(DicomSeries.series_instance_uid == first.series_instance_uid)
            )
        ).scalar_one_or_none()
        if series is None:
            series = DicomSeries(
                study_id=study.id,
                series_instance_uid=first.series_instance_uid,
                modality=first.modality,
                series_number=first.series_number,
                series_description=_cut(first.series_description, 64),
                body_part=_cut(first.body_part, 64),
                instance_count=0,
            )
            session.add(series)
            await session.flush()
        elif series.study_id != study.id:
            raise Invalid("the series belongs to another study", code="bad-dicom")
        calling_ae = ae_of(actor)
        await session.execute(
            insert(DicomInstance),
            [
                {
                    "study_id": study.id,
                    "series_id": series.id,
                    "sop_instance_uid": r.sop_instance_uid,
                    "sop_class_uid": r.sop_class_uid,
                    "transfer_syntax_uid": r.transfer_syntax_uid,
                    "instance_number": r.instance_number,
                    "path": r.path,
                    "size_bytes": r.size_bytes,
                    "calling_ae": calling_ae,
                    "received_at": now,
                }
                for r in run
            ],
        )
        await session.execute(
            update(DicomSeries)
            .where(DicomSeries.id == series.id)
            .values(instance_count=DicomSeries.instance_count + len(run))
        )
        modalities = list(study.modalities or [])
        for record in run:
            if record.modality and record.modality not in modalities:
                modalities.append(record.modality)
        await session.execute(
            update(DicomStudy)
            .where(DicomStudy.id == study.id)
            .values(
                instance_count=DicomStudy.instance_count + len(run),
                total_bytes=DicomStudy.total_bytes + sum(r.size_bytes for r in run),
                last_received_at=now,
                modalities=modalities,
            )
            .execution_options(synchronize_session=False)
        )
        completion = await _completion_after_store(session, hub, study, run[-1])
        detail = {"study": study.study_instance_uid, **mismatch}
        await session.execute(
            insert(AuditEntry),
            [
                audit_values(
                    hub,
                    actor,
                    AuditRecord("dicom.store", "dicom_instance", r.sop_instance_uid, study.source_path, detail),
                )
                for r in run
            ],
        )
        outcome = StoreOutcome(False, study.study_instance_uid, study.request_id, study.matched_by)
    outcomes = [outcome] * len(run)
    if completion is not None:
        signal = await complete_request(hub, completion)
        outcomes[-1] = StoreOutcome(False, outcome.study_instance_uid, outcome.request_id, outcome.matched_by, signal)
    return outcomes


def _check_record(record: InstanceRecord) -> None:
    for name in ("sop_instance_uid", "sop_class_uid", "study_instance_uid", "series_instance_uid"):
        value = getattr(record, name)
        if not value or len(value) > 64:
            raise Invalid(f"{name} is missing or longer than 64 characters", code="bad-dicom")


class _Duplicate(Exception):
    """The instance is indexed already (its insert met the SOP UID's unique key): its use case is undone."""


def _insert_for(dialect: str) -> Any:
    return pg_insert if dialect == "postgresql" else sqlite_insert


async def _store_duplicate(hub: Hub, actor: Actor, record: InstanceRecord) -> StoreOutcome | None:
    """A re-sent instance: what the index holds for it (audited as a duplicate), or None if it is gone."""
    async with use_case(hub, actor, "dicom.store", "dicom_instance", record.sop_instance_uid) as uow:
        existing = (
            await uow.session.execute(
                select(DicomInstance.path, DicomStudy.study_instance_uid, DicomStudy.request_id)
                .join(DicomStudy, DicomStudy.id == DicomInstance.study_id)
                .where(DicomInstance.sop_instance_uid == record.sop_instance_uid)
            )
        ).one_or_none()
        if existing is None:
            return None
        uow.audit(detail={"duplicate": True})
        return StoreOutcome(True, existing[1], existing[2], None, existing_path=existing[0])


async def _store_once(hub: Hub, actor: Actor, record: InstanceRecord) -> tuple[StoreOutcome, Completion | None]:
    """Index one new instance. The series is one ``INSERT … ON CONFLICT DO UPDATE`` that also moves its
    counter, the instance one ``INSERT … ON CONFLICT DO NOTHING``: a re-sent instance finds no row inserted
    and raises :class:`_Duplicate`, which undoes the use case (so the counters are not moved twice)."""
    async with use_case(hub, actor, "dicom.store", "dicom_instance", record.sop_instance_uid) as uow:
        session = uow.session
        now = hub.clock.now()
        study, mismatch = await _study_for(session, hub, actor, record, now)
        uow.audit(object_path=study.source_path, detail={"study": study.study_instance_uid, **mismatch})
        insert = _insert_for(hub.dialect)
        series_id, series_study = (
            await session.execute(
                insert(DicomSeries)
                .values(
                    study_id=study.id,
                    series_instance_uid=record.series_instance_uid,
                    modality=record.modality,
                    series_number=record.series_number,
                    series_description=_cut(record.series_description, 64),
                    body_part=_cut(record.body_part, 64),
                    instance_count=1,
                )
                .on_conflict_do_update(
                    index_elements=[DicomSeries.series_instance_uid],
                    set_={"instance_count": DicomSeries.instance_count + 1},
                )
                .returning(DicomSeries.id, DicomSeries.study_id)
            )
        ).one()
        if series_study != study.id:
            raise Invalid("the series belongs to another study", code="bad-dicom")
        instance_id = (
            await session.execute(
                insert(DicomInstance)
                .values(
                    study_id=study.id,
                    series_id=series_id,
                    sop_instance_uid=record.sop_instance_uid,
                    sop_class_uid=record.sop_class_uid,
                    transfer_syntax_uid=record.transfer_syntax_uid,
                    instance_number=record.instance_number,
                    path=record.path,
                    size_bytes=record.size_bytes,
                    calling_ae=ae_of(actor),
                    received_at=now,
                )
                .on_conflict_do_nothing(index_elements=[DicomInstance.sop_instance_uid])
                .returning(DicomInstance.id)
            )
        ).scalar_one_or_none()
        if instance_id is None:
            raise _Duplicate(record.sop_instance_uid)
        if record.ecg is not None:
            session.add(_ecg_row(instance_id, record.ecg))
        # Counters move with SQL expressions so concurrent associations never lose an update.
        modalities = list(study.modalities or [])
        if record.modality and record.modality not in modalities:
            modalities.append(record.modality)
        await session.execute(
            update(DicomStudy)
            .where(DicomStudy.id == study.id)
            .values(
                instance_count=DicomStudy.instance_count + 1,
                total_bytes=DicomStudy.total_bytes + record.size_bytes,
                last_received_at=now,
                modalities=modalities,
            )
            .execution_options(synchronize_session=False)
        )
        completion = await _completion_after_store(session, hub, study, record)
        return StoreOutcome(False, study.study_instance_uid, study.request_id, study.matched_by), completion


def _cut(value: str | None, length: int) -> str | None:
    return value[:length] if value else value


def _ecg_row(instance_id: int, ecg: EcgSummary) -> EcgMeasurement:
    return EcgMeasurement(
        instance_id=instance_id,
        heart_rate_bpm=ecg.heart_rate_bpm,
        rr_ms_mean=ecg.rr_ms_mean,
        r_peak_count=ecg.r_peak_count,
        lead=ecg.lead,
        method=ecg.method,
        sampling_hz=ecg.sampling_hz,
        duration_s=ecg.duration_s,
        leads=list(ecg.leads),
        svg_path=ecg.svg_path,
        json_path=ecg.json_path,
        error=ecg.error,
    )


async def _study_for(
    session: AsyncSession, hub: Hub, actor: Actor, record: InstanceRecord, now: datetime
) -> tuple[DicomStudy, dict[str, Any]]:
    """The study row of this instance, created and matched on its first instance; with what the audit row
    says of a match refused for a contradicting patient (empty otherwise)."""
    study = (
        await session.execute(select(DicomStudy).where(DicomStudy.study_instance_uid == record.study_instance_uid))
    ).scalar_one_or_none()
    if study is not None:
        if not (is_within(study.source_path, actor.institution_path) or study.source_path == actor.institution_path):
            raise Forbidden("this study was sent by another institution", code="scope")
        _fill_study(study, record)
        if study.request_id is None and record.accession_number:
            request = await request_by_accession(session, actor, record.accession_number)
            if request is not None:
                mismatch = await _patient_mismatch(session, hub, actor, study, request)
                if not mismatch:
                    await link_to_request(session, hub, study, request, "accession", now, actor.username)
                return study, mismatch
        return study, {}
    study = new_study(actor, record.study_instance_uid, now)
    _fill_study(study, record)
    session.add(study)
    await session.flush()
    request = await request_by_accession(session, actor, record.accession_number) if record.accession_number else None
    how = "accession"
    if request is None:
        # The Study Instance UID the order fixed (OMI IPC-3), handed out by the worklist.
        request = await request_by_study_uid(session, actor, record.study_instance_uid)
        how = "study-uid"
    if request is not None:
        mismatch = await _patient_mismatch(session, hub, actor, study, request)
        if mismatch:
            return study, mismatch
        await link_to_request(session, hub, study, request, how, now, actor.username)
    else:
        inst_code = actor.institution_code
        await emit(
            session,
            hub,
            "study.unmatched",
            [f"requests:{inst_code}"],
            {"study_instance_uid": study.study_instance_uid, "accession_number": study.accession_number},
        )
    return study, {}


async def _patient_mismatch(
    session: AsyncSession, hub: Hub, actor: Actor, study: DicomStudy, request: Request
) -> dict[str, Any]:
    """The fields in which the study's patient contradicts the request it would be linked to automatically.
    When any: not linked; the study waits in the reconciliation list with a warning (event, log, audit)."""
    contradicted = await patient_contradictions(session, request, study_patient(study))
    if not contradicted:
        return {}
    log.warning(
        "study %s names accession %s but its patient differs in %s: not linked, left for reconciliation",
        study.study_instance_uid,
        request.accession_number,
        ", ".join(contradicted),
    )
    await emit(
        session,
        hub,
        "study.unmatched",
        [f"requests:{actor.institution_code}"],
        {
            "study_instance_uid": study.study_instance_uid,
            "accession_number": study.accession_number,
            "request_id": request.id,
            "patient_mismatch": contradicted,
        },
    )
    return {"request_id": request.id, "patient_mismatch": contradicted}


def _fill_study(study: DicomStudy, record: InstanceRecord) -> None:
    """Study attributes from the first instance that has them (later instances do not overwrite)."""
    values = {
        "accession_number": _cut(record.accession_number, 16),
        "patient_name": _cut(record.patient_name, 200),
        "patient_id": _cut(record.patient_id, 64),
        "patient_birth_date": _cut(record.patient_birth_date, 8),
        "patient_sex": _cut(record.patient_sex, 16),
        "study_date": _cut(record.study_date, 8),
        "study_time": _cut(record.study_time, 16),
        "study_id": _cut(record.study_id, 16),
        "study_description": _cut(record.study_description, 64),
        "referring_physician": _cut(record.referring_physician, 200),
        "operators_name": _cut(record.operators_name, 200),
        "character_set": _cut(record.character_set, 64),
    }
    for key, value in values.items():
        if value and not getattr(study, key):
            setattr(study, key, value)


async def _completion_after_store(
    session: AsyncSession, hub: Hub, study: DicomStudy, record: InstanceRecord
) -> Completion | None:
    if study.request_id is None:
        return None
    request = await session.get(Request, study.request_id)
    if request is None:
        return None
    if request.state != "ordered":
        if request.state != "cancelled" and study.completed_at is not None:
            center = await session.get(Center, request.center_id)
            if center is not None:
                await forwarding.enqueue(session, hub, study, request, center)  # a late instance
        return None
    if request.kind == "ecg" and record.ecg is not None:
        return Completion(request.id, "ecg", [study.id])
    if request.kind == "imaging" and study.mpps_waiting and await mpps_satisfied(session, study):
        return Completion(request.id, "mpps", [study.id])
    return None


# --------------------------------------------------------------------------------------------------
# The routing hook: a request now sits at a center
# --------------------------------------------------------------------------------------------------
