"""What people see of DICOM studies: the reconciliation list and link (coordinators), a request's studies,
and the ECG files with the hub's measurement as a suggestion. Every read is scope-checked and audited."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from telenet.domain.access import Actor, Role
from telenet.domain.errors import Conflict, Forbidden, Invalid, NotFound
from telenet.domain.tiers import is_within
from telenet.services import study_links
from telenet.services.access import can_see_request, load_request, require_role
from telenet.services.hub import Hub, read_use_case, use_case
from telenet.store.models import DicomInstance, DicomSeries, DicomStudy, EcgMeasurement, Institution, Request

# --------------------------------------------------------------------------------------------------
# Reconciliation: studies that arrived without a matching order
# --------------------------------------------------------------------------------------------------


def _require_coordinator(actor: Actor, action: str) -> None:
    require_role(actor, Role.COORDINATOR, Role.ADMIN, action=action)


async def reconciliation_list(hub: Hub, actor: Actor, *, limit: int = 100) -> dict[str, Any]:
    """Unmatched studies sent from the coordinator's subtree, oldest first."""
    _require_coordinator(actor, "read the reconciliation list")
    async with read_use_case(hub, actor, "dicom.reconciliation.read", "dicom_study") as uow:
        rows = (
            (
                await uow.session.execute(
                    select(DicomStudy)
                    .where(DicomStudy.request_id.is_(None), DicomStudy.source_path.startswith(actor.institution_path))
                    .order_by(DicomStudy.first_received_at, DicomStudy.id)
                    .limit(limit)
                )
            )
            .scalars()
            .all()
        )
        codes = await _institution_codes(uow.session, {s.source_institution_id for s in rows})
        warnings = await _mismatch_warnings(uow.session, actor, rows)
        uow.audit(object_path=actor.institution_path, detail={"count": len(rows)})
        return {
            "items": [{**_study_summary(s, codes.get(s.source_institution_id)), **warnings.get(s.id, {})} for s in rows]
        }


async def _mismatch_warnings(session: AsyncSession, actor: Actor, rows: Sequence[DicomStudy]) -> dict[int, Any]:
    """Why a study with a known accession number waits here: its patient contradicts that request's
    (``warning``, ``accession_request_id``, ``patient_mismatch``), so it was not linked automatically."""
    accessions = {s.accession_number for s in rows if s.accession_number}
    if not accessions:
        return {}
    requests = (await session.execute(select(Request).where(Request.accession_number.in_(accessions)))).scalars().all()
    by_accession = {r.accession_number: r for r in requests if is_within(r.requesting_path, actor.institution_path)}
    warnings: dict[int, Any] = {}
    for study in rows:
        request = by_accession.get(study.accession_number or "")
        if request is None:
            continue
        contradicted = await study_links.patient_contradictions(session, request, study_links.study_patient(study))
        if contradicted:
            warnings[study.id] = {
                "warning": "patient-mismatch",
                "accession_request_id": request.id,
                "patient_mismatch": contradicted,
            }
    return warnings


async def link_study(
    hub: Hub,
    actor: Actor,
    study_instance_uid: str,
    *,
    request_id: int | None,
    accession_number: str | None,
    confirm_reason: str | None = None,
) -> dict[str, Any]:
    """A coordinator links an unmatched study to the request it belongs to (by id or accession number).
    A study whose patient contradicts the request's (id, name, birth date, sex) is refused (409) unless the
    coordinator confirms with a reason, which the audit keeps."""
    _require_coordinator(actor, "link a study to a request")
    async with use_case(hub, actor, "dicom.reconciliation.link", "dicom_study", study_instance_uid) as uow:
        session = uow.session
        study = (
            await session.execute(select(DicomStudy).where(DicomStudy.study_instance_uid == study_instance_uid))
        ).scalar_one_or_none()
        if study is None:
            raise NotFound(f"no study {study_instance_uid}")
        if not is_within(study.source_path, actor.institution_path):
            raise Forbidden("the study was sent from outside your scope", code="scope")
        uow.audit(object_path=study.source_path)
        if study.request_id is not None:
            raise Conflict("the study is already linked to a request", code="already-linked")
        if request_id is None:
            if not accession_number:
                raise Invalid("give request_id or accession_number", code="bad-link")
            request_id = (
                await session.execute(select(Request.id).where(Request.accession_number == accession_number))
            ).scalar_one_or_none()
            if request_id is None:
                raise NotFound(f"no request with accession number {accession_number}")
        request = await load_request(session, actor, request_id, for_update=True)
        if request.kind == "consultation":
            raise Invalid("a consultation has no DICOM study", code="bad-link")
        contradicted = await study_links.patient_contradictions(session, request, study_links.study_patient(study))
        if contradicted:
            uow.audit(detail={"request_id": request.id, "patient_mismatch": contradicted})
            if not confirm_reason or not confirm_reason.strip():
                raise Conflict(
                    f"the study's patient differs from the request's in {', '.join(contradicted)}; "
                    "confirm with a reason (confirm_reason) if it is the same person",
                    code="patient-mismatch",
                    details=[{"field": name} for name in contradicted],
                )
            uow.audit(detail={"confirm_reason": confirm_reason.strip()})
        await study_links.link_to_request(session, hub, study, request, "link", hub.clock.now(), actor.username)
        uow.audit(detail={"request_id": request.id})
        has_ecg = (
            await session.execute(
                select(func.count())
                .select_from(EcgMeasurement)
                .join(DicomInstance, DicomInstance.id == EcgMeasurement.instance_id)
                .where(DicomInstance.study_id == study.id)
            )
        ).scalar_one()
        codes = await _institution_codes(session, {study.source_institution_id})
        view = _study_summary(study, codes.get(study.source_institution_id))
        state, kind = request.state, request.kind
    if state == "ordered" and kind == "ecg" and has_ecg:
        view["completed"] = await study_links.complete_request(hub, study_links.Completion(request_id, "ecg"))
    return view


async def _institution_codes(session: AsyncSession, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = (await session.execute(select(Institution.id, Institution.code).where(Institution.id.in_(ids)))).all()
    return {row[0]: row[1] for row in rows}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _study_summary(study: DicomStudy, source_code: str | None) -> dict[str, Any]:
    return {
        "study_instance_uid": study.study_instance_uid,
        "request_id": study.request_id,
        "accession_number": study.accession_number,
        "patient_name": study.patient_name,
        "patient_id": study.patient_id,
        "patient_birth_date": study.patient_birth_date,
        "patient_sex": study.patient_sex,
        "study_date": study.study_date,
        "study_description": study.study_description,
        "modalities": list(study.modalities or []),
        "instance_count": study.instance_count,
        "total_bytes": study.total_bytes,
        "source_institution": source_code,
        "calling_ae": study.calling_ae,
        "first_received_at": _iso(study.first_received_at),
        "last_received_at": _iso(study.last_received_at),
        "matched_by": study.matched_by,
        "completed_at": _iso(study.completed_at),
        "completed_by": study.completed_by,
    }


# --------------------------------------------------------------------------------------------------
# Views: a request's studies, an ECG
# --------------------------------------------------------------------------------------------------


async def request_studies(hub: Hub, actor: Actor, request_id: int) -> dict[str, Any]:
    """The studies of a request with their series and, for ECG instances, the hub's measured suggestion."""
    async with read_use_case(hub, actor, "dicom.studies.read", "request", str(request_id)) as uow:
        session = uow.session
        request = await load_request(session, actor, request_id, uow=uow)
        studies = (
            (
                await session.execute(
                    select(DicomStudy).where(DicomStudy.request_id == request.id).order_by(DicomStudy.id)
                )
            )
            .scalars()
            .all()
        )
        codes = await _institution_codes(session, {s.source_institution_id for s in studies})
        items = []
        for study in studies:
            view = _study_summary(study, codes.get(study.source_institution_id))
            series_rows = (
                (
                    await session.execute(
                        select(DicomSeries)
                        .where(DicomSeries.study_id == study.id)
                        .order_by(DicomSeries.series_number, DicomSeries.id)
                    )
                )
                .scalars()
                .all()
            )
            view["series"] = [
                {
                    "series_instance_uid": s.series_instance_uid,
                    "modality": s.modality,
                    "series_number": s.series_number,
                    "series_description": s.series_description,
                    "body_part": s.body_part,
                    "instance_count": s.instance_count,
                }
                for s in series_rows
            ]
            ecg_rows = (
                await session.execute(
                    select(DicomInstance.sop_instance_uid, EcgMeasurement)
                    .join(EcgMeasurement, EcgMeasurement.instance_id == DicomInstance.id)
                    .where(DicomInstance.study_id == study.id)
                    .order_by(DicomInstance.id)
                )
            ).all()
            view["ecg"] = [ecg_view(uid, m) for uid, m in ecg_rows]
            items.append(view)
        return {"request_id": request.id, "accession_number": request.accession_number, "studies": items}


SUGGESTION_NOTE = (
    "measured by the hub from the waveform (Pan-Tompkins); a suggestion for the reader, never written into a "
    "report by itself"
)


def ecg_view(sop_instance_uid: str, m: EcgMeasurement) -> dict[str, Any]:
    return {
        "sop_instance_uid": sop_instance_uid,
        "svg": f"/api/v1/ecg/{sop_instance_uid}.svg",
        "json": f"/api/v1/ecg/{sop_instance_uid}.json",
        "suggestion": {
            "heart_rate_bpm": round(m.heart_rate_bpm, 1) if m.heart_rate_bpm is not None else None,
            "rr_ms_mean": round(m.rr_ms_mean, 1) if m.rr_ms_mean is not None else None,
            "r_peak_count": m.r_peak_count,
            "lead": m.lead,
            "method": m.method,
            "note": SUGGESTION_NOTE,
        },
        "sampling_hz": m.sampling_hz,
        "duration_s": m.duration_s,
        "leads": list(m.leads or []),
        "error": m.error,
    }


async def ecg_files(hub: Hub, actor: Actor, sop_instance_uid: str) -> dict[str, Any]:
    """An ECG's rendered files and measurement, for whoever may see the request it belongs to (or, while it
    waits for reconciliation, the coordinators above its sender)."""
    async with read_use_case(hub, actor, "dicom.ecg.read", "dicom_instance", sop_instance_uid) as uow:
        session = uow.session
        row = (
            await session.execute(
                select(EcgMeasurement, DicomStudy, DicomInstance.path)
                .join(DicomInstance, DicomInstance.id == EcgMeasurement.instance_id)
                .join(DicomStudy, DicomStudy.id == DicomInstance.study_id)
                .where(DicomInstance.sop_instance_uid == sop_instance_uid)
            )
        ).one_or_none()
        if row is None:
            raise NotFound(f"no ECG {sop_instance_uid}")
        measurement, study, instance_path = row
        uow.audit(object_path=study.source_path)
        if study.request_id is not None:
            request = await session.get(Request, study.request_id)
            assert request is not None
            allowed = await can_see_request(session, actor, request)
        else:
            allowed = actor.role in (Role.COORDINATOR, Role.ADMIN) and is_within(
                study.source_path, actor.institution_path
            )
        if not allowed:
            raise Forbidden("this ECG is outside your scope", code="scope")
        view = ecg_view(sop_instance_uid, measurement)
        view["svg_path"] = measurement.svg_path
        view["json_path"] = measurement.json_path
        view["instance_path"] = instance_path
        view["request_id"] = study.request_id
        return view
