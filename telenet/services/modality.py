"""What modalities and workstations ask the hub over DICOM: the Modality Worklist (from ``ordered`` imaging and
ECG requests, scoped to the calling AE's institution) and Study Root query/retrieve (a center's workstation
sees the studies routed to its institution's centers and those its institution sent, nothing else). MPPS is
in ``mpps``."""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from telenet.domain.access import Actor, Role
from telenet.domain.errors import Invalid, NotFound
from telenet.services import peer_charsets
from telenet.services.access import require_role
from telenet.services.dicom_matching import all_of, datetime_range_clause, range_clause, value_clause
from telenet.services.hub import Hub, read_use_case, use_case
from telenet.services.study_search import audit_studies
from telenet.store.models import (
    Center,
    DicomInstance,
    DicomSeries,
    DicomStudy,
    Institution,
    InstitutionAETitle,
    Patient,
    Request,
)

log = logging.getLogger(__name__)

MAX_MATCHES = 1000
_PRIORITY = {"stat": "STAT", "urgent": "HIGH", "routine": "ROUTINE"}


CHARSETS = ("UTF-8", "GB18030", "GBK")


async def registered_charset(hub: Hub, actor: Actor, ae_title: str | None = None) -> str | None:
    """The character set the calling AE title is registered with, else the one its institution registered for
    its DICOM peers; None when neither is (the gateway answers in UTF-8 then)."""
    if ae_title:
        found = await peer_charsets.ae_charset(hub, ae_title)
        if found is not None:
            return found
    async with hub.reader() as session:
        charset = (
            await session.execute(select(Institution.dicom_charset).where(Institution.id == actor.institution_id))
        ).scalar_one_or_none()
    return charset if charset in CHARSETS else None


def study_uid_for(secret: bytes, accession_number: str) -> str:
    """The StudyInstanceUID the worklist hands out for a request: stable for the request, but unguessable
    without the server secret (accession numbers are sequential, so a UID derived from them alone could be
    pre-stored by another AE to take the study over): 2.25 + 128 bits of HMAC-SHA256, PS3.5 B.2."""
    digest = hmac.new(secret, b"study-uid:" + accession_number.encode(), hashlib.sha256).digest()
    return f"2.25.{uuid.UUID(bytes=digest[:16], version=4).int}"


def matches(pattern: str | None, value: str | None) -> bool:
    """DICOM single-value matching with ``*`` and ``?`` wildcards; an empty key matches everything."""
    if not pattern or pattern == "*":
        return True
    if value is None:
        return False
    if "*" in pattern or "?" in pattern:
        return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))
    return value == pattern


@dataclass(frozen=True)
class WorklistQuery:
    """The matching keys of a worklist C-FIND (dates as YYYYMMDD strings, names as DICOM patterns)."""

    accession_number: str | None = None
    patient_id: str | None = None
    patient_name: str | None = None
    modality: str | None = None
    date_from: str | None = None
    date_to: str | None = None
    station_ae: str | None = None


async def worklist(hub: Hub, actor: Actor, query: WorklistQuery) -> list[dict[str, Any]]:
    """``ordered`` imaging and ECG requests of the caller's institution that match the query."""
    require_role(actor, Role.INTEGRATION, action="query the modality worklist")
    async with read_use_case(hub, actor, "dicom.worklist.find", "request") as uow:
        session = uow.session
        uow.audit(object_path=actor.institution_path)
        own_aes = set(
            (
                await session.execute(
                    select(InstitutionAETitle.ae_title).where(InstitutionAETitle.institution_id == actor.institution_id)
                )
            )
            .scalars()
            .all()
        )
        if query.station_ae and not any(matches(query.station_ae, ae) for ae in own_aes):
            return []
        date_from, date_to = query.date_from, query.date_to
        sql = (
            select(Request, Patient, Institution.name)
            .join(Patient, Patient.id == Request.patient_id)
            .join(Institution, Institution.id == Request.requesting_institution_id)
            .where(
                Request.requesting_institution_id == actor.institution_id,
                Request.state == "ordered",
                Request.kind.in_(("imaging", "ecg")),
                all_of(
                    value_clause(Request.accession_number, query.accession_number, hub.dialect),
                    value_clause(Patient.his_id, query.patient_id, hub.dialect),
                    value_clause(Patient.name, query.patient_name, hub.dialect),
                    value_clause(Request.modality, query.modality, hub.dialect),
                    datetime_range_clause(func.coalesce(Request.scheduled_at, Request.ordered_at), date_from, date_to),
                ),
            )
            .order_by(Request.priority_rank, Request.id)
            .limit(MAX_MATCHES)
        )
        station = _station(query.station_ae, actor)
        items = []
        for request, patient, institution_name in (await session.execute(sql)).all():
            scheduled = request.scheduled_at or request.ordered_at
            items.append(
                {
                    "request_id": request.id,
                    "accession_number": request.accession_number,
                    "patient_name": patient.name,
                    "patient_id": patient.his_id,
                    "patient_birth_date": patient.birth_date.strftime("%Y%m%d") if patient.birth_date else None,
                    "patient_sex": patient.sex,
                    "modality": request.modality,
                    "body_part": request.body_part,
                    "kind": request.kind,
                    "priority": _PRIORITY.get(request.priority, "ROUTINE"),
                    "procedure_description": " ".join(x for x in (request.modality, request.body_part) if x),
                    "reason": request.clinical_question,
                    "requesting_physician": request.ordering_clinician_name or request.requester_name,
                    "requesting_institution": institution_name,
                    "scheduled_date": scheduled.strftime("%Y%m%d"),
                    "scheduled_time": scheduled.strftime("%H%M%S"),
                    "station_ae": station,
                    "study_instance_uid": request.study_instance_uid
                    or study_uid_for(hub.options.secret, request.accession_number),
                }
            )
        uow.audit(detail={"count": len(items)})
        return items


def _wild(value: str) -> bool:
    return "*" in value or "?" in value


def _station(asked: str | None, actor: Actor) -> str:
    if asked and not _wild(asked):
        return asked
    return actor.username.removeprefix("dicom:")[:16]


# --------------------------------------------------------------------------------------------------
# Study Root query / retrieve
# --------------------------------------------------------------------------------------------------

LEVELS = ("STUDY", "SERIES", "IMAGE")


@dataclass(frozen=True)
class StudyQuery:
    level: str
    study_uids: tuple[str, ...] = ()
    series_uids: tuple[str, ...] = ()
    sop_uids: tuple[str, ...] = ()
    accession_number: str | None = None
    patient_id: str | None = None
    patient_name: str | None = None
    modality: str | None = None
    date_from: str | None = None
    date_to: str | None = None


def _scope(actor: Actor) -> Any:
    """Studies routed to the caller's institution's centers, or sent by the caller's institution."""
    own_centers = select(Center.id).where(Center.institution_id == actor.institution_id)
    routed = select(Request.id).where(Request.center_id.in_(own_centers))
    return DicomStudy.request_id.in_(routed) | (DicomStudy.source_institution_id == actor.institution_id)


def _study_filter(actor: Actor, query: StudyQuery, dialect: str) -> Any:
    """Scope and the study-level keys, as one WHERE clause."""
    modality = None
    if query.modality and query.modality != "*":
        modality = (
            select(DicomSeries.id)
            .where(
                DicomSeries.study_id == DicomStudy.id,
                all_of(value_clause(DicomSeries.modality, query.modality, dialect)),
            )
            .exists()
        )
    return all_of(
        _scope(actor),
        DicomStudy.instance_count > 0,
        DicomStudy.study_instance_uid.in_(query.study_uids) if query.study_uids else None,
        value_clause(DicomStudy.accession_number, query.accession_number, dialect),
        value_clause(DicomStudy.patient_id, query.patient_id, dialect),
        value_clause(DicomStudy.patient_name, query.patient_name, dialect),
        range_clause(DicomStudy.study_date, query.date_from, query.date_to),
        modality,
    )


async def _studies(session: AsyncSession, hub: Hub, actor: Actor, query: StudyQuery) -> list[DicomStudy]:
    """The matching studies, newest first, at most ``MAX_MATCHES``: the cap applies to matches, never before."""
    sql = select(DicomStudy).where(_study_filter(actor, query, hub.dialect))
    rows = (await session.execute(sql.order_by(DicomStudy.id.desc()).limit(MAX_MATCHES))).scalars().all()
    return list(rows)


async def find(hub: Hub, actor: Actor, query: StudyQuery) -> list[dict[str, Any]]:
    """C-FIND at study, series or image level within the caller's scope; each match as attribute values."""
    require_role(actor, Role.INTEGRATION, action="query studies")
    if query.level not in LEVELS:
        raise Invalid(f"QueryRetrieveLevel must be one of {', '.join(LEVELS)}", code="bad-level")
    async with read_use_case(hub, actor, "dicom.find", "dicom_study") as uow:
        session = uow.session
        uow.audit(object_path=actor.institution_path, detail={"level": query.level})
        results: list[dict[str, Any]]
        if query.level == "STUDY":
            found = await _studies(session, hub, actor, query)
            series_counts = await _series_counts(session, [s.id for s in found])
            results = [_study_values(s, series_counts.get(s.id, 0)) for s in found]
            touched = list(found)
        elif query.level == "SERIES":
            series_sql = (
                select(DicomSeries, DicomStudy)
                .join(DicomStudy, DicomStudy.id == DicomSeries.study_id)
                .where(
                    _study_filter(actor, query, hub.dialect),
                    all_of(
                        DicomSeries.series_instance_uid.in_(query.series_uids) if query.series_uids else None,
                        value_clause(DicomSeries.modality, query.modality, hub.dialect),
                    ),
                )
                .order_by(DicomSeries.id.desc())
                .limit(MAX_MATCHES)
            )
            series_rows = (await session.execute(series_sql)).all()
            results = [{**_study_keys(study), **_series_values(series)} for series, study in series_rows]
            touched = [study for _series, study in series_rows]
        else:
            inst_sql = (
                select(DicomInstance, DicomSeries.series_instance_uid, DicomStudy)
                .join(DicomSeries, DicomSeries.id == DicomInstance.series_id)
                .join(DicomStudy, DicomStudy.id == DicomInstance.study_id)
                .where(
                    _study_filter(actor, query, hub.dialect),
                    all_of(
                        DicomSeries.series_instance_uid.in_(query.series_uids) if query.series_uids else None,
                        DicomInstance.sop_instance_uid.in_(query.sop_uids) if query.sop_uids else None,
                    ),
                )
                .order_by(DicomInstance.id.desc())
                .limit(MAX_MATCHES)
            )
            inst_rows = (await session.execute(inst_sql)).all()
            results = [
                {
                    **_study_keys(study),
                    "SeriesInstanceUID": series_uid,
                    "SOPInstanceUID": i.sop_instance_uid,
                    "SOPClassUID": i.sop_class_uid,
                    "InstanceNumber": i.instance_number,
                }
                for i, series_uid, study in inst_rows
            ]
            touched = [study for _i, _uid, study in inst_rows]
        uow.audit(object_path=_owner_path(touched, actor), detail={"count": len(results)})
        return results


def _owner_path(studies: Sequence[DicomStudy], actor: Actor) -> str:
    """The institution whose data a query or retrieve touched, for its audit row: the one institution that
    acquired every matched study, else (none, or several) the caller's own, whose scope the query ranged over."""
    sources = {s.source_path for s in studies}
    if len(sources) == 1:
        (only,) = sources
        if only:
            return only
    return actor.institution_path


async def _series_counts(session: AsyncSession, study_ids: list[int]) -> dict[int, int]:
    from sqlalchemy import func

    if not study_ids:
        return {}
    rows = (
        await session.execute(
            select(DicomSeries.study_id, func.count())
            .where(DicomSeries.study_id.in_(study_ids))
            .group_by(DicomSeries.study_id)
        )
    ).all()
    return {row[0]: int(row[1]) for row in rows}


def _study_keys(study: DicomStudy) -> dict[str, Any]:
    return {"StudyInstanceUID": study.study_instance_uid, "PatientID": study.patient_id}


def _study_values(study: DicomStudy, series_count: int) -> dict[str, Any]:
    return {
        "StudyInstanceUID": study.study_instance_uid,
        "PatientName": study.patient_name,
        "PatientID": study.patient_id,
        "PatientBirthDate": study.patient_birth_date,
        "PatientSex": study.patient_sex,
        "StudyDate": study.study_date,
        "StudyTime": study.study_time,
        "AccessionNumber": study.accession_number,
        "StudyID": study.study_id,
        "StudyDescription": study.study_description,
        "ReferringPhysicianName": study.referring_physician,
        "ModalitiesInStudy": list(study.modalities or []),
        "NumberOfStudyRelatedSeries": series_count,
        "NumberOfStudyRelatedInstances": study.instance_count,
        "SpecificCharacterSet": study.character_set,
    }


def _series_values(series: DicomSeries) -> dict[str, Any]:
    return {
        "SeriesInstanceUID": series.series_instance_uid,
        "Modality": series.modality,
        "SeriesNumber": series.series_number,
        "SeriesDescription": series.series_description,
        "BodyPartExamined": series.body_part,
        "NumberOfSeriesRelatedInstances": series.instance_count,
    }


@dataclass(frozen=True)
class RetrieveFile:
    path: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str


async def retrieve(hub: Hub, actor: Actor, query: StudyQuery, *, destination: str | None = None) -> list[RetrieveFile]:
    """The files a C-MOVE or C-GET sends: the matches of ``query`` within the caller's scope."""
    require_role(actor, Role.INTEGRATION, action="retrieve studies")
    if query.level not in LEVELS:
        raise Invalid(f"QueryRetrieveLevel must be one of {', '.join(LEVELS)}", code="bad-level")
    if not (query.study_uids or query.series_uids or query.sop_uids):
        raise Invalid("a retrieve names the studies, series or instances it wants", code="bad-retrieve")
    action = "dicom.move" if destination else "dicom.get"
    async with use_case(hub, actor, action, "dicom_study") as uow:
        session = uow.session
        uow.audit(object_path=actor.institution_path, detail={"destination": destination})
        # One query over the whole scope: a series or instance UID alone finds its study, however old.
        sql = (
            select(DicomInstance, DicomStudy)
            .join(DicomSeries, DicomSeries.id == DicomInstance.series_id)
            .join(DicomStudy, DicomStudy.id == DicomInstance.study_id)
            .where(
                _study_filter(actor, StudyQuery(level="STUDY", study_uids=query.study_uids), hub.dialect),
                all_of(
                    DicomSeries.series_instance_uid.in_(query.series_uids) if query.series_uids else None,
                    DicomInstance.sop_instance_uid.in_(query.sop_uids) if query.sop_uids else None,
                ),
            )
        )
        pairs = (await session.execute(sql.order_by(DicomInstance.id))).all()
        sent = list({study.id: study for _i, study in pairs}.values())
        # Each study retrieved, and each one asked for outside the caller's scope, has its own row filed under
        # the institution that acquired it: its admins see who took (or tried to take) their patients' images.
        # The use case's own row is the first study's; nothing sent, it is filed under the caller's institution.
        if sent:
            first = sent[0]
            uow.audit(
                object_id=first.study_instance_uid,
                object_path=first.source_path,
                detail={
                    "count": len(pairs),
                    "patient_id": first.patient_id,
                    "accession_number": first.accession_number,
                },
            )
        else:
            uow.audit(detail={"count": 0})
        audit_studies(uow, actor, action, sent[1:], destination=destination)
        audit_studies(uow, actor, action, await _out_of_scope(session, query, sent), outcome="scope")
        return [RetrieveFile(i.path, i.sop_class_uid, i.sop_instance_uid, i.transfer_syntax_uid) for i, _s in pairs]


async def _out_of_scope(session: AsyncSession, query: StudyQuery, allowed: Sequence[DicomStudy]) -> list[DicomStudy]:
    """The studies a retrieve names (by study, series or instance UID) that exist but are not the caller's."""
    # Distinct study ids first: PostgreSQL cannot DISTINCT over the study's JSON columns.
    named = (
        select(DicomStudy.id)
        .join(DicomSeries, DicomSeries.study_id == DicomStudy.id)
        .join(DicomInstance, DicomInstance.series_id == DicomSeries.id)
        .where(
            DicomStudy.id.not_in([s.id for s in allowed]) if allowed else DicomStudy.id.is_not(None),
            all_of(
                DicomStudy.study_instance_uid.in_(query.study_uids) if query.study_uids else None,
                DicomSeries.series_instance_uid.in_(query.series_uids) if query.series_uids else None,
                DicomInstance.sop_instance_uid.in_(query.sop_uids) if query.sop_uids else None,
            ),
        )
        .distinct()
        .limit(MAX_MATCHES)
    )
    return list((await session.execute(select(DicomStudy).where(DicomStudy.id.in_(named)))).scalars().all())


async def move_destination(hub: Hub, actor: Actor, ae_title: str) -> tuple[str, str, int]:
    """Where a C-MOVE may send: the registered DICOM node (AE, host, port) of a center of the caller's
    institution. Anything else is an unknown destination."""
    async with hub.sessions() as session:
        row = (
            await session.execute(
                select(Center.dicom_ae_title, Center.dicom_host, Center.dicom_port).where(
                    Center.dicom_ae_title == ae_title.strip(), Center.institution_id == actor.institution_id
                )
            )
        ).first()
    if row is None or not row[1] or not row[2]:
        raise NotFound(f"move destination {ae_title!r} is not a registered node of your institution")
    return str(row[0]), str(row[1]), int(row[2])


def parse_date_range(value: str | None) -> tuple[str | None, str | None]:
    """A DICOM DA range ``YYYYMMDD``, ``A-B``, ``A-`` or ``-B`` as (low, high) strings."""
    if not value:
        return None, None
    text = value.strip()
    if "-" not in text:
        _date(text)
        return text, text
    low, _, high = text.partition("-")
    for part in (low, high):
        if part:
            _date(part)
    return low or None, high or None


def _date(text: str) -> date:
    try:
        return datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise Invalid(f"{text!r} is not a DICOM date (YYYYMMDD)", code="bad-date") from None
