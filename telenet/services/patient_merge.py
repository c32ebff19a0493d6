"""ADT^A40 patient merge (IHE RAD-12): the merged (prior) id's requests, studies, recognition decisions and
queued messages follow the surviving id; nothing is deleted, every moved row is written down on the merge,
and an admin can undo the merge exactly.

Protocol-free: the HL7 gateway maps A40 to :func:`merge`; the REST API offers :func:`list_merges` and
:func:`revert`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from telenet.domain.access import Actor, Role
from telenet.domain.errors import Conflict, Forbidden, NotFound
from telenet.services import requests
from telenet.services.access import require_role
from telenet.services.events import emit
from telenet.services.hub import Hub, use_case
from telenet.store.models import (
    DicomStudy,
    HL7OutboxItem,
    Institution,
    Patient,
    PatientMerge,
    RecognitionDecision,
    Request,
)


async def merge(hub: Hub, actor: Actor, surviving: dict[str, Any], prior_id: str, message_control_id: str) -> int:
    """Merge ``prior_id`` into the surviving patient (created or updated from ``surviving``); returns the
    merge id. Merging an id into itself, or an unknown prior id, is refused (nothing to move is an error the
    HIS should hear about)."""
    require_role(actor, Role.INTEGRATION, action="merge patients")
    if prior_id == surviving["id"]:
        raise Conflict("MRG-1 names the surviving patient itself", code="merge-into-self")
    async with use_case(hub, actor, "patient.merge", "patient") as uow:
        session = uow.session
        uow.audit(object_path=actor.institution_path)
        prior = (
            await session.execute(
                select(Patient).where(Patient.institution_id == actor.institution_id, Patient.his_id == prior_id)
            )
        ).scalar_one_or_none()
        if prior is None:
            raise NotFound(f"no patient {prior_id} (MRG-1) at {actor.institution_code}", code="unknown-patient")
        if prior.merged_into_id is not None:
            raise Conflict(f"patient {prior_id} is already merged", code="already-merged")
        target = await requests.upsert_patient(hub, session, actor.institution_id, surviving)
        moved = await _move(session, prior, target)
        prior.merged_into_id = target.id
        row = PatientMerge(
            institution_id=actor.institution_id,
            institution_path=actor.institution_path,
            surviving_patient_id=target.id,
            merged_patient_id=prior.id,
            merged_his_id=prior.his_id,
            surviving_his_id=target.his_id,
            moved=moved,
            message_control_id=message_control_id,
            merged_at=hub.clock.now(),
            merged_by=actor.username,
        )
        session.add(row)
        await session.flush()
        await emit(
            session, hub, "patient.merged", [f"requests:{actor.institution_code}"],
            {"merge_id": row.id, "requests": moved["requests"]},
        )  # fmt: skip
        uow.audit(
            object_id=str(target.id),
            detail={"merge_id": row.id, "merged_his_id": prior.his_id, "surviving_his_id": target.his_id, **moved},
        )
        return row.id


async def _move(session: AsyncSession, prior: Patient, target: Patient) -> dict[str, list[int]]:
    request_ids = list(
        (await session.execute(select(Request.id).where(Request.patient_id == prior.id))).scalars().all()
    )
    study_ids = list(
        (
            await session.execute(
                select(DicomStudy.id).where(
                    DicomStudy.patient_id == prior.his_id,
                    DicomStudy.request_id.in_(request_ids)
                    | (DicomStudy.request_id.is_(None) & (DicomStudy.source_institution_id == prior.institution_id)),
                )
            )
        )
        .scalars()
        .all()
    )
    decision_ids = list(
        (await session.execute(select(RecognitionDecision.id).where(RecognitionDecision.patient_id == prior.id)))
        .scalars()
        .all()
    )
    outbox_ids = list(
        (
            await session.execute(
                select(HL7OutboxItem.id).where(
                    HL7OutboxItem.patient_key == str(prior.id), HL7OutboxItem.status == "pending"
                )
            )
        )
        .scalars()
        .all()
    )
    await _set(session, request_ids, study_ids, decision_ids, outbox_ids, target, prior.his_id)
    return {"requests": request_ids, "studies": study_ids, "recognitions": decision_ids, "outbox": outbox_ids}


async def _set(
    session: AsyncSession,
    request_ids: list[int],
    study_ids: list[int],
    decision_ids: list[int],
    outbox_ids: list[int],
    patient: Patient,
    study_patient_from: str,
) -> None:
    if request_ids:
        await session.execute(update(Request).where(Request.id.in_(request_ids)).values(patient_id=patient.id))
    if study_ids:
        await session.execute(
            update(DicomStudy)
            .where(DicomStudy.id.in_(study_ids), DicomStudy.patient_id == study_patient_from)
            .values(patient_id=patient.his_id)
        )
    if decision_ids:
        await session.execute(
            update(RecognitionDecision).where(RecognitionDecision.id.in_(decision_ids)).values(patient_id=patient.id)
        )
    if outbox_ids:
        await session.execute(
            update(HL7OutboxItem).where(HL7OutboxItem.id.in_(outbox_ids)).values(patient_key=str(patient.id))
        )


def merge_view(row: PatientMerge) -> dict[str, Any]:
    return {
        "id": row.id,
        "surviving_patient_id": row.surviving_his_id,
        "merged_patient_id": row.merged_his_id,
        "moved": row.moved,
        "message_control_id": row.message_control_id,
        "merged_at": _iso(row.merged_at),
        "merged_by": row.merged_by,
        "reverted_at": _iso(row.reverted_at),
        "reverted_by": row.reverted_by,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _require_admin(actor: Actor) -> None:
    if actor.role is not Role.ADMIN:
        raise Forbidden("only admins see and undo patient merges", code="role")


async def list_merges(hub: Hub, actor: Actor, limit: int = 100) -> dict[str, Any]:
    """The merges of the admin's subtree, newest first."""
    _require_admin(actor)
    async with use_case(hub, actor, "patient.merges.read", "patient_merge") as uow:
        uow.audit(object_path=actor.institution_path)
        rows = (
            (
                await uow.session.execute(
                    select(PatientMerge)
                    .where(PatientMerge.institution_path.startswith(actor.institution_path))
                    .order_by(PatientMerge.id.desc())
                    .limit(limit)
                )
            )
            .scalars()
            .all()
        )
        return {"items": [merge_view(r) for r in rows]}


async def revert(hub: Hub, actor: Actor, merge_id: int) -> dict[str, Any]:
    """Undo a merge: exactly the rows it moved go back to the merged id, which is a patient of its own
    again; audited. Rows created for the surviving id after the merge stay with it."""
    _require_admin(actor)
    async with use_case(hub, actor, "patient.merge.revert", "patient_merge", str(merge_id)) as uow:
        session = uow.session
        row = await session.get(PatientMerge, merge_id)
        if row is None:
            raise NotFound(f"no patient merge {merge_id}")
        if not row.institution_path.startswith(actor.institution_path):
            raise Forbidden(f"patient merge {merge_id} is outside your scope", code="scope")
        uow.audit(object_path=row.institution_path)
        if row.reverted_at is not None:
            raise Conflict(f"patient merge {merge_id} is already reverted", code="already-reverted")
        prior = await session.get(Patient, row.merged_patient_id)
        target = await session.get(Patient, row.surviving_patient_id)
        assert prior is not None and target is not None
        moved = row.moved
        await _set(
            session, moved["requests"], moved["studies"], moved["recognitions"], moved["outbox"], prior,
            target.his_id,
        )  # fmt: skip
        prior.merged_into_id = None
        row.reverted_at = hub.clock.now()
        row.reverted_by = actor.username
        code = (
            await session.execute(select(Institution.code).where(Institution.id == row.institution_id))
        ).scalar_one()
        await emit(session, hub, "patient.merge_reverted", [f"requests:{code}"], {"merge_id": row.id})
        uow.audit(detail={"merged_his_id": row.merged_his_id, "surviving_his_id": row.surviving_his_id, **moved})
        return merge_view(row)
