"""Submitting and following requests: order, data complete, cancel, resubmit, the request view and lists."""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telenet.domain.access import Actor, Role
from telenet.domain.errors import Conflict, Invalid
from telenet.domain.lifecycle import (
    Action,
    Kind,
    Priority,
    RequestState,
    initial_state,
    transition,
)
from telenet.domain.patients import SEXES, last4, national_id_hmac
from telenet.domain.routing import RouteQuery
from telenet.domain.sla import due_at
from telenet.domain.sla_rules import sla_minutes
from telenet.domain.tiers import Tier
from telenet.services import consultation_members, routing
from telenet.services.access import (
    center_of,
    load_for_action,
    load_request,
    require_requesting_side,
    require_role,
)
from telenet.services.events import emit, request_topics
from telenet.services.group_commit import in_group
from telenet.services.hub import Hub, UnitOfWork, read_use_case, use_case
from telenet.services.modality import study_uid_for
from telenet.services.request_views import _iso, committed_view, request_view, view_of
from telenet.services.transitions import apply, apply_fields, summary
from telenet.store.models import (
    Center,
    Institution,
    Patient,
    Request,
)

# DICOM AccessionNumber is SH: at most 16 characters, no backslash or control characters.
_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})")
_ACCESSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,15}$")
ACCESSION_FORMAT = "TN + yymmdd (UTC) + the request id zero-padded to 8 digits, e.g. TN26030200000042"


def issued_accession(request_id: int, ordered_at: datetime) -> str:
    """The accession number the hub issues when the order has none (see ACCESSION_FORMAT)."""
    return f"TN{ordered_at:%y%m%d}{request_id:08d}"[:16]


async def upsert_patient(hub: Hub, session: AsyncSession, institution_id: int, data: dict[str, Any]) -> Patient:
    """The institution's patient by HIS id, created or updated; the national id only as HMAC + last 4."""
    sex = data.get("sex")
    if sex is not None and sex not in SEXES:
        raise Invalid(f"sex must be one of {sorted(SEXES)}", code="bad-patient")
    birth = data.get("birth_date")
    birth_date = date.fromisoformat(birth) if isinstance(birth, str) else birth
    national_id: str | None = data.get("national_id")
    digest = national_id_hmac(hub.options.secret, national_id) if national_id else None
    now = hub.clock.now()
    patient = (
        await session.execute(
            select(Patient).where(Patient.institution_id == institution_id, Patient.his_id == data["id"])
        )
    ).scalar_one_or_none()
    if patient is not None and patient.merged_into_id is not None:
        # An id merged away (ADT^A40): what still comes for it belongs to the surviving patient.
        survivor = await session.get(Patient, patient.merged_into_id)
        if survivor is not None:
            return survivor
    if patient is None:
        patient = Patient(institution_id=institution_id, his_id=data["id"], created_at=now, name=data["name"])
        session.add(patient)
    patient.name = data["name"]
    patient.sex = sex if sex is not None else patient.sex
    patient.birth_date = birth_date if birth_date is not None else patient.birth_date
    if digest is not None and national_id is not None:
        patient.national_id_hmac = digest
        patient.national_id_last4 = last4(national_id)
    if data.get("identifiers"):
        patient.identifiers = {**(patient.identifiers or {}), **data["identifiers"]}
    patient.updated_at = now
    await session.flush()
    return patient


def due_for(queued_at: datetime, request: Request, center_table: dict[str, int] | None) -> datetime:
    """When ``request`` is due at a center: its modality and body part's limit (``sla_rules``)."""
    minutes = sla_minutes(request.kind, request.priority, request.modality, request.body_part, center_table)
    return due_at(queued_at, {request.priority: minutes}, request.priority)


def _aware(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    if not _RFC3339.fullmatch(value):  # what the document says (fromisoformat also reads 20260302T1000)
        raise Invalid(f"{name} is an RFC 3339 time (e.g. 2026-03-02T10:00:00+08:00)", code="bad-time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Invalid(f"{name} is not an ISO 8601 time", code="bad-time") from None
    if moment.tzinfo is None:
        raise Invalid(f"{name} needs a UTC offset", code="bad-time")
    if not 1900 <= moment.year <= 9998:  # year 1 at +08:00 does not fit UTC (OverflowError when stored)
        raise Invalid(f"{name} must lie in the years 1900 to 9998", code="bad-time")
    return moment


async def submit(hub: Hub, actor: Actor, body: dict[str, Any], *, consent_optional: bool = False) -> dict[str, Any]:
    """Order a read or a consultation: upsert the patient, route to a center, and answer with the request.

    ``consent_optional`` is for HL7 orders that do not carry consent: an imaging or ECG request then waits in
    ``ordered`` with consent missing (and says so) until :func:`record_consent`; REST orders must carry it.
    """
    require_role(actor, Role.REQUESTER, Role.INTEGRATION, action="order a remote service")
    kind = Kind(body["kind"])
    priority = Priority(body["priority"])
    consent = body.get("consent") or {}
    has_consent = bool(consent.get("given_by") and consent.get("given_at"))
    if not has_consent and (not consent_optional or kind is Kind.CONSULTATION):
        raise Invalid(
            "the patient's informed consent (知情同意: given_by, given_at) is required",
            code="consent-missing",
        )
    consent_at = _aware(consent["given_at"], "consent.given_at") if has_consent else None
    modality = body.get("modality")
    if kind is not Kind.CONSULTATION and not modality:
        raise Invalid(f"an {kind.value} request needs a modality", code="modality-missing")
    if kind is Kind.ECG:
        modality = modality or "ECG"
    accession = body.get("accession_number")
    if accession is not None and not _ACCESSION.match(accession):
        raise Invalid("accession_number: 1-16 letters, digits, '.', '_' or '-'", code="bad-accession")
    scheduled_at = _aware(body.get("scheduled_at"), "scheduled_at")
    async with use_case(hub, actor, "request.create", "request") as uow:
        session = uow.session
        snap = await routing.snapshot(hub)
        requester = snap.institution(actor.institution_id, hub.clock.now()) if snap else None
        requester = requester or await session.get(Institution, actor.institution_id)
        assert requester is not None
        uow.audit(object_path=requester.path)
        if accession is not None:
            taken = (
                await session.execute(select(Request.id).where(Request.accession_number == accession))
            ).scalar_one_or_none()
            if taken is not None:
                raise Conflict(f"accession number {accession} is already in use", code="duplicate-accession")
        patient = await upsert_patient(hub, session, requester.id, body["patient"])
        query = RouteQuery(
            kind=kind.value,
            modality=modality,
            body_part=body.get("body_part"),
            subspecialty=body.get("subspecialty"),
            priority=priority.value,
            requester_code=requester.code,
            requester_path=requester.path,
            requester_tier=Tier(requester.tier),
        )
        decision = await routing.decide(hub, session, query, requester)
        if decision.center_code is None:
            raise Invalid(decision.reason, code="no-route", details=routing.considered_json(decision))
        found = snap.center_by_code(decision.center_code, hub.clock.now()) if snap else None
        if found is None:
            center_id = await routing.center_id_by_code(session, decision.center_code)
            center, _ = await center_of(session, center_id)
        else:
            center = found[0]
            center_id = center.id
        now = hub.clock.now()
        state = initial_state(kind)
        request = Request(
            accession_number=accession or f"tmp-{uuid.uuid4().hex[:12]}",
            kind=kind.value,
            modality=modality,
            body_part=body.get("body_part"),
            priority=priority.value,
            priority_rank=priority.rank,
            clinical_question=body["clinical_question"],
            subspecialty=body.get("subspecialty"),
            scheduled_at=scheduled_at,
            patient_id=patient.id,
            requesting_institution_id=requester.id,
            requesting_path=requester.path,
            requester_id=actor.user_id or None,
            requester_name=actor.display_name or actor.username,
            ordering_clinician_id=(body.get("ordering_clinician") or {}).get("id")
            or (None if actor.role is Role.INTEGRATION else actor.username),
            ordering_clinician_name=(body.get("ordering_clinician") or {}).get("name")
            or (None if actor.role is Role.INTEGRATION else actor.display_name or actor.username),
            consent_given_by=consent.get("given_by") if has_consent else None,
            consent_given_at=consent_at,
            state=state.value,
            center_id=center_id,
            ordered_at=now,
            updated_at=now,
            version=1,
            escalations=0,
        )
        if state is RequestState.QUEUED:
            request.queued_at = now
            request.due_at = due_for(now, request, center.sla_minutes)
        session.add(request)
        await session.flush()
        if accession is None:
            request.accession_number = issued_accession(request.id, now)
        if request.study_instance_uid is None and kind is not Kind.CONSULTATION:
            # The UID the worklist hands out, kept so that the view, the MWL, the images and the ORU agree.
            request.study_instance_uid = study_uid_for(hub.options.secret, request.accession_number)
        await routing.record(hub, session, request.id, "route", decision, center_id, None, actor.username)
        await consultation_members.invite_at_order(
            session, hub, actor, request, body.get("invited_centers", []), body.get("participants", [])
        )
        await session.flush()
        await hub.follow_ups.routed(hub, session, request, center)
        uow.audit(object_id=str(request.id), detail={"accession_number": request.accession_number})
        await emit(
            session,
            hub,
            f"request.{state.value}",
            request_topics(request.id, center.code, requester.code),
            summary(request, center.code),
            request_id=request.id,
        )
        return await committed_view(uow, actor, request)


async def submit_grouped(hub: Hub, actor: Actor, body: dict[str, Any]) -> dict[str, Any]:
    """A REST order: concurrent orders share one transaction and one durable commit (group commit, each in its
    own savepoint, so a refused one rolls back alone); the view is read after that commit."""
    if hub.group_commit is None or not hub.build_views:
        return await submit(hub, actor, body)
    ids = await in_group(hub, submit, actor, body)
    return await view_of(hub, actor, int(ids["id"]))


async def get(hub: Hub, actor: Actor, request_id: int) -> dict[str, Any]:
    async with read_use_case(hub, actor, "request.read", "request", str(request_id)) as uow:
        request = await load_request(uow.session, actor, request_id, uow=uow)
        return await request_view(uow.session, actor, request)


async def list_requests(
    hub: Hub,
    actor: Actor,
    *,
    state: str | None = None,
    kind: str | None = None,
    limit: int = 50,
    before_id: int | None = None,
) -> dict[str, Any]:
    """The requests the actor may see, newest first: its institution's (requesters), its subtree's
    (coordinators, admins), or those at its centers (readers)."""
    if state is not None and state not in {s.value for s in RequestState}:
        raise Invalid(f"unknown state {state!r}", code="bad-parameter")
    if kind is not None and kind not in {k.value for k in Kind}:
        raise Invalid(f"unknown kind {kind!r}", code="bad-parameter")
    async with read_use_case(hub, actor, "request.list", "request") as uow:
        query = (
            select(Request, Center.code, Patient.name)
            .join(Center, Center.id == Request.center_id)
            .join(Patient, Patient.id == Request.patient_id)
        )
        if actor.role in (Role.REQUESTER, Role.INTEGRATION):
            query = query.where(Request.requesting_institution_id == actor.institution_id)
        elif actor.role is Role.READER:
            query = query.where(Center.code.in_(actor.center_codes) | (Request.claimed_by_id == actor.user_id))
        else:
            query = query.where(
                Request.requesting_path.startswith(actor.institution_path) | Center.code.in_(actor.center_codes)
            )
        if state:
            query = query.where(Request.state == state)
        if kind:
            query = query.where(Request.kind == kind)
        if before_id:
            query = query.where(Request.id < before_id)
        rows = (await uow.session.execute(query.order_by(Request.id.desc()).limit(limit))).all()
        uow.audit(object_path=actor.institution_path, detail={"count": len(rows), "state": state, "kind": kind})
        items = []
        # Administrators get the list without patients' names unless they state a reason (break-glass).
        hide_patients = actor.role is Role.ADMIN and not actor.break_glass
        for request, center_code, patient_name in rows:
            item = summary(request, center_code)
            item.update(
                {
                    "patient_name": None if hide_patients else patient_name,
                    "modality": request.modality,
                    "ordered_at": _iso(request.ordered_at),
                    "final_at": _iso(request.final_at),
                }
            )
            items.append(item)
        return {"items": items, "next_before_id": rows[-1][0].id if len(rows) == limit else None}


async def data_complete(hub: Hub, actor: Actor, request_id: int, signal: str = "api") -> dict[str, Any]:
    """The study or ECG is complete: ``ordered`` → ``queued`` with the SLA clock started. Gateways call this.

    Without the patient's consent the request stays ``ordered``: the data is recorded as complete and the
    request is queued the moment consent is recorded.
    """
    require_role(actor, Role.INTEGRATION, action="mark data complete")
    async with use_case(hub, actor, "request.data_complete", "request", str(request_id)) as uow:
        request, center, inst_code = await load_for_action(uow, actor, request_id, integration_subtree=True)
        if request.consent_given_at is None and request.state == RequestState.ORDERED.value:
            transition(request.kind, request.state, Action.DATA_COMPLETE)
            await apply_fields(
                hub,
                uow.session,
                request,
                center.code,
                inst_code,
                "request.data_complete",
                {"signal": signal, "waiting_for": "consent"},
                data_completed_by=signal,
                data_completed_at=hub.clock.now(),
            )
        else:
            await _queue(hub, uow, request, center, inst_code, signal, data_completed_at=hub.clock.now())
        return await committed_view(uow, actor, request)


async def _queue(
    hub: Hub, uow: UnitOfWork, request: Request, center: Center, inst_code: str, signal: str, **changes: Any
) -> None:
    now = hub.clock.now()
    await apply(
        hub,
        uow.session,
        request,
        Action.DATA_COMPLETE,
        event="request.queued",
        center_code=center.code,
        institution_code=inst_code,
        data={"signal": signal},
        queued_at=now,
        data_completed_by=signal,
        due_at=due_for(now, request, center.sla_minutes),
        **changes,
    )
    # The data is complete: forward it to the center's PACS in this same transaction.
    await hub.follow_ups.routed(hub, uow.session, request, center)


async def record_consent(hub: Hub, actor: Actor, request_id: int, given_by: str, given_at: str) -> dict[str, Any]:
    """Record the patient's informed consent (知情同意) on an order that arrived without it; if its data is
    already complete, it is queued now."""
    moment = _aware(given_at, "given_at")
    async with use_case(hub, actor, "request.consent", "request", str(request_id)) as uow:
        request, center, inst_code = await load_for_action(uow, actor, request_id, integration_subtree=True)
        require_requesting_side(actor, request, action="record consent")
        if request.consent_given_at is not None:
            raise Conflict("consent is already recorded", code="consent-recorded", details={"state": request.state})
        if request.state != RequestState.ORDERED.value:
            raise Conflict(
                f"cannot record consent on a request that is {request.state}",
                code="illegal-transition",
                details={"state": request.state},
            )
        await apply_fields(
            hub,
            uow.session,
            request,
            center.code,
            inst_code,
            "request.consent_recorded",
            {"given_by": given_by},
            consent_given_by=given_by,
            consent_given_at=moment,
        )
        if request.data_completed_at is not None:
            await _queue(hub, uow, request, center, inst_code, request.data_completed_by or "api")
        return await committed_view(uow, actor, request)


async def cancel(hub: Hub, actor: Actor, request_id: int, reason: str | None) -> dict[str, Any]:
    async with use_case(hub, actor, "request.cancel", "request", str(request_id)) as uow:
        request, center, inst_code = await load_for_action(uow, actor, request_id)
        require_requesting_side(actor, request, action="cancel a request")
        await apply(
            hub,
            uow.session,
            request,
            Action.CANCEL,
            event="request.cancelled",
            center_code=center.code,
            institution_code=inst_code,
            data={"reason": reason, "by": actor.username},
            cancelled_at=hub.clock.now(),
            claimed_by_id=None,
            claim_expires_at=None,
        )
        return await committed_view(uow, actor, request)


async def resubmit(hub: Hub, actor: Actor, request_id: int, note: str | None) -> dict[str, Any]:
    """The requester has fixed what the reader returned it for: queued again at the same center, a new SLA."""
    async with use_case(hub, actor, "request.resubmit", "request", str(request_id)) as uow:
        request, center, inst_code = await load_for_action(uow, actor, request_id)
        require_requesting_side(actor, request, action="resubmit a request")
        now = hub.clock.now()
        await apply(
            hub,
            uow.session,
            request,
            Action.RESUBMIT,
            event="request.resubmitted",
            center_code=center.code,
            institution_code=inst_code,
            data={"note": note},
            queued_at=now,
            due_at=due_for(now, request, center.sla_minutes),
            sla_breached_at=None,
        )
        return await committed_view(uow, actor, request)
