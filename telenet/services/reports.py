"""Reports: preliminary drafts, signed final reports (immutable), signed addenda, and critical findings
(危急值) with acknowledgement, read-back and escalation."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telenet.domain.access import MIN_YEARS_TO_SIGN, Actor, Role, may_sign_final, years_of_practice
from telenet.domain.errors import Conflict, Forbidden, Invalid, NotFound
from telenet.domain.lifecycle import Action, Kind, transition
from telenet.services import outbox
from telenet.services.access import center_of, load_for_action, require_center_staff, require_requesting_side
from telenet.services.events import emit, flush_events
from telenet.services.hub import Hub, read_use_case, use_case
from telenet.services.requests import committed_view, critical_view
from telenet.services.transitions import apply, summary
from telenet.store.models import CriticalFinding, Institution, Report, Request, User

ECG_FIELDS = ("rhythm", "rate_bpm", "pr_ms", "qrs_ms", "qt_ms", "qtc_ms", "axis_deg", "conclusion")


def canonical_digest(content: dict[str, Any]) -> str:
    """SHA-256 over canonical JSON (sorted keys, no spaces, UTF-8): anyone can recompute it from the report."""
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def signed_content(request: Request, report: Report) -> dict[str, Any]:
    assert report.signed_at is not None
    return {
        "request_id": request.id,
        "accession_number": request.accession_number,
        "status": report.status,
        "findings": report.findings,
        "impression": report.impression,
        "critical": report.critical,
        "critical_items": report.critical_items,
        "structured": report.structured,
        "signer": report.author_name,
        "signer_id": report.author_id,
        "signed_at": report.signed_at.isoformat(),
    }


def _check_structured(kind: str, structured: dict[str, Any] | None) -> None:
    if structured is None:
        return
    if kind != Kind.ECG.value:
        raise Invalid("structured fields are for ECG reports", code="structured-not-allowed")
    unknown = set(structured) - set(ECG_FIELDS)
    if unknown:
        raise Invalid(f"unknown ECG fields: {sorted(unknown)}; known: {list(ECG_FIELDS)}", code="bad-structured")


async def report(hub: Hub, actor: Actor, request_id: int, body: dict[str, Any]) -> dict[str, Any]:
    """Save a preliminary report, or sign the final one (which ends the work and may raise a critical finding)."""
    final = bool(body["final"])
    critical = bool(body.get("critical", False))
    items = list(body.get("critical_items") or [])
    if critical and not items:
        raise Invalid("a critical report names its critical items", code="critical-items-missing")
    async with use_case(
        hub, actor, "report.final" if final else "report.preliminary", "request", str(request_id)
    ) as uow:
        session = uow.session
        request, center, inst_code = await load_for_action(uow, actor, request_id)
        require_center_staff(actor, center, action="report", coordinators=False)
        if request.state == "claimed" and request.claimed_by_id != actor.user_id:
            raise Forbidden("only the reader holding the claim may report", code="not-holder")
        _check_structured(request.kind, body.get("structured"))
        now = hub.clock.now()
        if final and not may_sign_final(actor, now.date()):
            years = years_of_practice(actor.practice_since, now.date())
            raise Forbidden(
                f"signing a final report needs {MIN_YEARS_TO_SIGN} years of independent practice; you have "
                f"{years}: save it as preliminary for a senior reader to sign",
                code="practice-years",
            )
        transition(request.kind, request.state, Action.FINALIZE if final else Action.SAVE_PRELIMINARY)
        draft = (
            await session.execute(select(Report).where(Report.request_id == request.id, Report.status == "preliminary"))
        ).scalar_one_or_none()
        if draft is None:
            draft = Report(
                request_id=request.id,
                status="preliminary",
                created_at=now,
                author_id=actor.user_id,
                author_name=actor.display_name or actor.username,
                author_institution_id=actor.institution_id,
                center_id=center.id,
            )
            session.add(draft)
        draft.findings = body["findings"]
        draft.impression = body["impression"]
        draft.critical = critical
        draft.critical_items = items
        draft.structured = body.get("structured")
        draft.author_id = actor.user_id
        draft.author_name = actor.display_name or actor.username
        if not final:
            await session.flush()
            await apply(
                hub,
                session,
                request,
                Action.SAVE_PRELIMINARY,
                event="request.preliminary_saved",
                center_code=center.code,
                institution_code=inst_code,
                data={"report_id": draft.id},
            )
            return await committed_view(uow, actor, request)
        draft.status = "final"
        draft.signed_at = now
        draft.digest = canonical_digest(signed_content(request, draft))
        await session.flush()
        await apply(
            hub,
            session,
            request,
            Action.FINALIZE,
            event="request.final",
            center_code=center.code,
            institution_code=inst_code,
            data={"report_id": draft.id, "critical": critical},
            final_at=now,
            claim_expires_at=None,
        )
        if critical:
            await _raise_critical(hub, session, request, draft, items, inst_code)
        await hub.follow_ups.finalized(hub, session, request, draft)  # fee line, ORU (wired in telenet.app)
        uow.audit(detail={"report_id": draft.id, "digest": draft.digest})
        return await committed_view(uow, actor, request)


async def _raise_critical(
    hub: Hub, session: AsyncSession, request: Request, report_row: Report, items: list[str], inst_code: str
) -> None:
    now = hub.clock.now()
    finding = CriticalFinding(
        request_id=request.id,
        report_id=report_row.id,
        institution_id=request.requesting_institution_id,
        items=items,
        raised_at=now,
        raised_by=report_row.author_name,
        deadline_at=now + timedelta(minutes=hub.options.critical_ack_minutes),
        escalation_level=0,
    )
    session.add(finding)
    await session.flush()
    await emit(
        session,
        hub,
        "critical.raised",
        [f"requests:{inst_code}", f"request:{request.id}"],
        {
            **summary(request, None),
            "critical_id": finding.id,
            "items": items,
            "deadline_at": finding.deadline_at.isoformat(),
            "raised_by": finding.raised_by,
        },
        request_id=request.id,
    )


async def addendum(hub: Hub, actor: Actor, request_id: int, body: dict[str, Any]) -> dict[str, Any]:
    """A signed correction of a final report, by a reader of the signing center who may sign."""
    async with use_case(hub, actor, "report.addendum", "request", str(request_id)) as uow:
        session = uow.session
        request, center, inst_code = await load_for_action(uow, actor, request_id)
        final = (
            await session.execute(select(Report).where(Report.request_id == request.id, Report.status == "final"))
        ).scalar_one_or_none()
        transition(request.kind, request.state, Action.ADDENDUM)
        assert final is not None
        signing_center, _ = await center_of(session, final.center_id)
        require_center_staff(actor, signing_center, action="add an addendum", coordinators=False)
        now = hub.clock.now()
        if not may_sign_final(actor, now.date()):
            raise Forbidden(
                f"an addendum is signed and needs {MIN_YEARS_TO_SIGN} years of independent practice",
                code="practice-years",
            )
        critical = bool(body.get("critical", False))
        items = list(body.get("critical_items") or [])
        if critical and not items:
            raise Invalid("a critical addendum names its critical items", code="critical-items-missing")
        row = Report(
            request_id=request.id,
            status="addendum",
            findings=body["text"],
            impression="",
            critical=critical,
            critical_items=items,
            structured=None,
            author_id=actor.user_id,
            author_name=actor.display_name or actor.username,
            author_institution_id=actor.institution_id,
            center_id=signing_center.id,
            created_at=now,
            signed_at=now,
        )
        session.add(row)
        await session.flush()
        row.digest = canonical_digest(signed_content(request, row))
        await apply(
            hub,
            session,
            request,
            Action.ADDENDUM,
            event="request.addendum",
            center_code=center.code,
            institution_code=inst_code,
            data={"report_id": row.id, "critical": critical},
        )
        if critical:
            await _raise_critical(hub, session, request, row, items, inst_code)
        await outbox.enqueue_result(hub, session, request, row)
        return await committed_view(uow, actor, request)


async def acknowledge(hub: Hub, actor: Actor, critical_id: int, body: dict[str, Any]) -> dict[str, Any]:
    """The requesting side confirms it received the critical finding, with who read it back (回读确认)."""
    async with use_case(hub, actor, "critical.ack", "critical", str(critical_id)) as uow:
        session = uow.session
        finding = await session.get(CriticalFinding, critical_id)
        if finding is None:
            raise NotFound(f"no critical finding {critical_id}")
        request = await session.get(Request, finding.request_id)
        assert request is not None
        uow.audit(object_path=request.requesting_path)
        require_requesting_side(actor, request, action="acknowledge a critical finding")
        if finding.acknowledged_at is not None:
            raise Conflict(
                f"critical finding {critical_id} was acknowledged at "
                f"{finding.acknowledged_at.isoformat()} by {finding.acknowledged_by}",
                code="already-acknowledged",
            )
        now = hub.clock.now()
        finding.acknowledged_at = now
        finding.acknowledged_by_id = actor.user_id
        finding.acknowledged_by = actor.display_name or actor.username
        finding.read_back_by = body["read_back_by"]
        finding.read_back = body.get("read_back")
        await session.flush()
        inst_code = (
            await session.execute(select(Institution.code).where(Institution.id == request.requesting_institution_id))
        ).scalar_one()
        center, _ = await center_of(session, request.center_id)
        await emit(
            session,
            hub,
            "critical.acknowledged",
            [f"requests:{inst_code}", f"request:{request.id}", f"worklist:{center.code}"],
            {
                **summary(request, center.code),
                "critical_id": finding.id,
                "by": actor.username,
                "read_back_by": finding.read_back_by,
                "minutes_to_ack": round((now - finding.raised_at).total_seconds() / 60, 1),
            },
            request_id=request.id,
        )
        return await critical_timeline(session, finding)


async def critical_timeline(session: AsyncSession, finding: CriticalFinding) -> dict[str, Any]:
    from telenet.store.models import Event

    await flush_events(session)  # events emitted in this transaction are read back below

    events = (
        (
            await session.execute(
                select(Event)
                .where(Event.request_id == finding.request_id, Event.name.like("critical.%"))
                .order_by(Event.id)
            )
        )
        .scalars()
        .all()
    )
    view = critical_view(finding)
    view["timeline"] = [
        {
            "at": e.at.isoformat(),
            "event": e.name,
            **{k: v for k, v in e.data.items() if k in ("by", "read_back_by", "level", "notified", "raised_by")},
        }
        for e in events
        if e.data.get("critical_id") == finding.id
    ]
    return view


async def get_critical(hub: Hub, actor: Actor, critical_id: int) -> dict[str, Any]:
    async with read_use_case(hub, actor, "critical.read", "critical", str(critical_id)) as uow:
        finding = await uow.session.get(CriticalFinding, critical_id)
        if finding is None:
            raise NotFound(f"no critical finding {critical_id}")
        from telenet.services.access import load_request

        request = await load_request(uow.session, actor, finding.request_id)
        uow.audit(object_path=request.requesting_path)
        return await critical_timeline(uow.session, finding)


async def escalate_unacknowledged(hub: Hub, now: datetime | None = None) -> int:
    """Critical findings past their deadline go to the requesting institution's coordinators and admins,
    then one tier further up each time the deadline passes again; every step is in the timeline."""
    now = now or hub.clock.now()
    async with hub.sessions() as session:
        ids = (
            (
                await session.execute(
                    select(CriticalFinding.id)
                    .where(CriticalFinding.acknowledged_at.is_(None), CriticalFinding.deadline_at < now)
                    .limit(500)
                )
            )
            .scalars()
            .all()
        )
    for finding_id in ids:
        async with use_case(hub, None, "critical.escalate", "critical") as uow:
            session = uow.session
            finding = await session.get(CriticalFinding, finding_id)
            if finding is None or finding.acknowledged_at is not None or finding.deadline_at >= now:
                continue
            request = await session.get(Request, finding.request_id)
            inst = await session.get(Institution, finding.institution_id)
            assert request is not None and inst is not None
            finding.escalation_level += 1
            finding.deadline_at = now + timedelta(minutes=hub.options.critical_ack_minutes)
            notified = await _escalation_targets(session, inst, finding.escalation_level)
            await session.flush()
            await emit(
                session,
                hub,
                "critical.escalated",
                [f"requests:{inst.code}", f"request:{request.id}"],
                {
                    **summary(request, None),
                    "critical_id": finding.id,
                    "level": finding.escalation_level,
                    "notified": notified,
                    "deadline_at": finding.deadline_at.isoformat(),
                },
                request_id=request.id,
            )
    return len(ids)


async def _escalation_targets(session: AsyncSession, inst: Institution, level: int) -> list[str]:
    """Level 1: coordinators and admins of the requesting institution; each further level adds one tier up."""
    codes = [c for c in inst.path.split("/") if c]
    reach = codes[max(0, len(codes) - level) :]
    rows = (
        await session.execute(
            select(User.username, Institution.code)
            .join(Institution, Institution.id == User.institution_id)
            .where(Institution.code.in_(reach), User.role.in_((Role.COORDINATOR.value, Role.ADMIN.value)))
            .order_by(User.username)
        )
    ).all()
    return [name for name, _ in rows]
