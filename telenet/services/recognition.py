"""Result recognition (检查检验结果互认): which final imaging / ECG results of a person another institution
may accept instead of repeating the exam, and the decisions its clinicians record.

The patient is named by the accepting institution's own HIS id (``patients.his_id`` at the ``at``
institution), the id its clinicians know; the same person's results at other institutions are found
through the keyed hash of the national id (``patients.national_id_hmac``). A patient without a national
id is matched only to its own row. The producer of a result is the institution of the center that signed
its final report. Validity windows come from the networks both institutions belong to (lead or member):
their ``recognition_validity_days`` overrides, the shortest where several set one, else the documented
defaults of ``telenet.domain.recognition``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, union
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from telenet.domain.access import Actor, Role
from telenet.domain.errors import Forbidden, Invalid, NotFound
from telenet.domain.recognition import (
    DEFAULT_VALIDITY_DAYS,
    LABELS,
    RECOGNITION_SCOPE,
    Eligibility,
    ResultFacts,
    ValidityKey,
    eligibility,
    validate_decision,
)
from telenet.domain.recognition_windows import validity_windows
from telenet.domain.tiers import Tier
from telenet.services.access import require_role
from telenet.services.fees import institution_by_code, local_day, price_in_force
from telenet.services.hub import Hub, read_use_case, use_case
from telenet.store.models import (
    Center,
    FeeScheduleEntry,
    Institution,
    Network,
    NetworkMember,
    Patient,
    RecognitionDecision,
    Report,
    Request,
)

RECOGNIZABLE_KINDS = ("imaging", "ecg")
SCOPE_NOTE = (
    "Recognition (互认) covers the exam data and images, not the physician's conclusion "
    "(国卫医发〔2022〕6号 第二条: 检查检验结果不包括医师出具的诊断结论); the accepting physician still reads them."
)
DEFINITIONS = {
    "recognizable": (
        "a final imaging or ECG result of the same person (national-id match) produced at another "
        "institution whose tier is the same as or higher than the accepting one, by a center not flagged "
        "as failing quality control, within its validity window (final_at + days, inclusive)"
    ),
    "producer": "the institution of the center that signed the final report",
    "acquirer": (
        "the institution that acquired the exam data (the inviting side, which answers for its quality): its "
        "level and quality-control standing count, or the reading center's level when a network declares the "
        "site under that center's quality control (同质化)"
    ),
    "validity_days": (
        "the window of (service, modality): overrides of the networks both institutions belong to, the "
        "shortest where several set one, else the defaults"
    ),
    "fee_avoided_fen": (
        "the price of the exam not repeated: the fee schedule's exam price list (service 'exam', 检查费) for "
        "the modality on the day; never the remote-read fee; null when the list has no price"
    ),
}


@dataclass(frozen=True)
class FoundResult:
    request: Request
    report: Report
    center: Center
    producer: Institution
    patient: Patient
    acquirer: Institution


async def accepting_patient(session: AsyncSession, at: Institution, his_id: str) -> Patient:
    patient = (
        await session.execute(select(Patient).where(Patient.institution_id == at.id, Patient.his_id == his_id))
    ).scalar_one_or_none()
    if patient is None:
        raise NotFound(f"no patient {his_id!r} at {at.code}")
    return patient


async def same_person(session: AsyncSession, patient: Patient) -> list[int]:
    """The patient rows of the same person across institutions (by national-id HMAC)."""
    if patient.national_id_hmac is None:
        return [patient.id]
    return list(
        (
            await session.execute(select(Patient.id).where(Patient.national_id_hmac == patient.national_id_hmac))
        ).scalars()
    )


async def final_results(
    session: AsyncSession, patient_ids: Sequence[int], request_id: int | None = None
) -> list[FoundResult]:
    acquirer = aliased(Institution)
    query = (
        select(Request, Report, Center, Institution, Patient, acquirer)
        .join(Report, (Report.request_id == Request.id) & (Report.status == "final"))
        .join(Center, Center.id == Report.center_id)
        .join(Institution, Institution.id == Center.institution_id)
        .join(Patient, Patient.id == Request.patient_id)
        .join(acquirer, acquirer.id == Request.requesting_institution_id)
        .where(
            Request.patient_id.in_(patient_ids),
            Request.state == "final",
            Request.kind.in_(RECOGNIZABLE_KINDS),
        )
    )
    if request_id is not None:
        query = query.where(Request.id == request_id)
    rows = (await session.execute(query.order_by(Request.final_at.desc(), Request.id.desc()))).all()
    return [FoundResult(*row) for row in rows]


async def _network_ids(session: AsyncSession, institution_id: int) -> set[int]:
    query = union(
        select(NetworkMember.network_id).where(NetworkMember.institution_id == institution_id),
        select(Network.id).where(Network.lead_id == institution_id),
    )
    return {int(row[0]) for row in (await session.execute(query)).all()}


async def windows_between(session: AsyncSession, at_id: int, producer_id: int) -> Mapping[ValidityKey, int]:
    shared = await _network_ids(session, at_id) & await _network_ids(session, producer_id)
    if not shared:
        return DEFAULT_VALIDITY_DAYS
    overrides = (
        (await session.execute(select(Network.recognition_validity_days).where(Network.id.in_(shared)))).scalars().all()
    )
    return validity_windows(o for o in overrides if o)


async def homogeneous(session: AsyncSession, site: Institution, center_institution_id: int) -> bool:
    """A network led by (or including) the reading center's institution declares ``site`` under its
    quality control (同质化)."""
    rows = (
        await session.execute(
            select(Network.homogeneous_sites).where(
                Network.homogeneous_sites.is_not(None),
                (Network.lead_id == center_institution_id)
                | Network.id.in_(
                    select(NetworkMember.network_id).where(NetworkMember.institution_id == center_institution_id)
                ),
            )
        )
    ).scalars()
    return any(site.code in (sites or []) for sites in rows)


async def judge(hub: Hub, session: AsyncSession, found: FoundResult, at: Institution) -> Eligibility:
    assert found.request.final_at is not None
    facts = ResultFacts(
        request_id=found.request.id,
        service=found.request.kind,
        modality=found.request.modality,
        final_at=found.request.final_at,
        producing_institution_code=found.producer.code,
        producing_tier=Tier(found.producer.tier),
        producing_center_code=found.center.code,
        center_qc_failed=found.center.qc_failed,
        acquiring_institution_code=found.acquirer.code,
        acquiring_tier=Tier(found.acquirer.tier),
        acquiring_qc_failed=found.acquirer.qc_failed,
        homogeneous=await homogeneous(session, found.acquirer, found.producer.id),
    )
    windows = await windows_between(session, at.id, found.producer.id)
    return eligibility(
        facts, at_institution_code=at.code, at_tier=Tier(at.tier), now=hub.clock.now(), validity_days=windows
    )


async def avoided_price(hub: Hub, session: AsyncSession, request: Request) -> FeeScheduleEntry | None:
    return await price_in_force(
        session,
        service=EXAM_SERVICE,
        modality=request.modality,
        priority=None,
        subspecialty=None,
        on=local_day(hub.clock.now()),
    )


EXAM_SERVICE = "exam"
"""The fee schedule's exam price list (检查费): what a recognized result saves is the acquisition."""


def _party(inst: Institution) -> dict[str, str]:
    return {"code": inst.code, "name": inst.name, "tier": inst.tier}


async def recognizable_results(hub: Hub, actor: Actor, his_id: str, at_code: str) -> dict[str, Any]:
    """Every final imaging / ECG result of the person, judged for recognition at ``at_code``; for users
    who may see that institution (its requesters, coordinators and admins above it). Audited."""
    require_role(actor, Role.REQUESTER, Role.INTEGRATION, Role.COORDINATOR, Role.ADMIN, action="look up results")
    async with read_use_case(hub, actor, "recognition.results", "patient", his_id) as uow:
        session = uow.session
        at = await institution_by_code(session, at_code)
        uow.audit(object_path=at.path)
        if not actor.sees_institution(at.path):
            raise Forbidden(f"{at.code} is outside your scope", code="scope")
        patient = await accepting_patient(session, at, his_id)
        uow.audit(object_id=str(patient.id))
        items = []
        for found in await final_results(session, await same_person(session, patient)):
            verdict = await judge(hub, session, found, at)
            price = await avoided_price(hub, session, found.request)
            assert found.request.final_at is not None
            items.append(
                {
                    "result_request_id": found.request.id,
                    "accession_number": found.request.accession_number,
                    "service": found.request.kind,
                    "modality": found.request.modality,
                    "body_part": found.request.body_part,
                    "final_at": found.request.final_at.isoformat(),
                    "producer": _party(found.producer),
                    "acquirer": _party(found.acquirer),
                    "center": found.center.code,
                    "recognizable": verdict.recognizable,
                    "reason": verdict.reason,
                    "expires_at": verdict.expires_at.isoformat(),
                    "fee_avoided_fen": price.price_fen if price is not None and verdict.recognizable else None,
                }
            )
        uow.audit(detail={"at": at.code, "count": len(items)})
        return {
            "patient": {"id": patient.his_id, "institution": at.code, "name": patient.name},
            "at": _party(at),
            "scope": RECOGNITION_SCOPE,
            "scope_note": SCOPE_NOTE,
            "definitions": DEFINITIONS,
            "recognizable_count": sum(1 for item in items if item["recognizable"]),
            "items": items,
        }


async def record_decision(hub: Hub, actor: Actor, body: Mapping[str, Any]) -> dict[str, Any]:
    """A clinician of the accepting institution recognizes a result (recording the fee avoided) or does not,
    with a policy reason code. Recognizing a result that is not recognizable is refused (422)."""
    require_role(actor, Role.REQUESTER, action="record a recognition decision")
    decision = str(body["decision"])
    reason = validate_decision(decision, body.get("reason_code"), body.get("note"))
    result_id = int(body["result_request_id"])
    async with use_case(hub, actor, "recognition.record", "request", str(result_id)) as uow:
        session = uow.session
        at = await session.get(Institution, actor.institution_id)
        assert at is not None
        uow.audit(object_path=at.path)
        patient = await accepting_patient(session, at, str(body["patient_id"]))
        found = await final_results(session, await same_person(session, patient), result_id)
        if not found:
            raise NotFound(f"no final imaging or ECG result {result_id} of this patient")
        result = found[0]
        verdict = await judge(hub, session, result, at)
        if decision == "recognized" and not verdict.recognizable:
            raise Invalid(
                f"result {result_id} is not recognizable at {at.code}: {verdict.reason}",
                code="not-recognizable",
                details={"reason": verdict.reason, "expires_at": verdict.expires_at.isoformat()},
            )
        price = await avoided_price(hub, session, result.request) if decision == "recognized" else None
        row = RecognitionDecision(
            patient_id=patient.id,
            result_request_id=result.request.id,
            institution_id=at.id,
            institution_path=at.path,
            producing_center_id=result.center.id,
            acquiring_institution_id=result.acquirer.id,
            decision=decision,
            reason_code=reason.value if reason is not None else None,
            note=body.get("note"),
            eligible=verdict.recognizable,
            eligibility_reason=verdict.reason,
            clinician_id=actor.user_id,
            clinician=actor.display_name or actor.username,
            fee_schedule_id=price.id if price is not None else None,
            fee_avoided_fen=price.price_fen if price is not None else None,
            at=hub.clock.now(),
        )
        session.add(row)
        await session.flush()
        uow.audit(detail={"decision_id": row.id, "decision": decision, "reason_code": row.reason_code})
        return {
            "id": row.id,
            "result_request_id": result.request.id,
            "accession_number": result.request.accession_number,
            "patient_id": patient.his_id,
            "institution": _party(at),
            "producer": _party(result.producer),
            "acquirer": _party(result.acquirer),
            "decision": decision,
            "reason_code": row.reason_code,
            "reason_label": LABELS[reason] if reason is not None else None,
            "note": row.note,
            "eligibility": {"recognizable": verdict.recognizable, "reason": verdict.reason},
            "clinician": row.clinician,
            "fee_avoided_fen": row.fee_avoided_fen,
            "scope": RECOGNITION_SCOPE,
            "recorded_at": row.at.isoformat(),
        }
