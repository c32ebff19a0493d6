"""Reports: preliminary versions (kept), signed final reports (immutable, naming both doctors) and signed
addenda; critical items in them are raised through ``telenet.services.critical``."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telenet.domain.access import Actor
from telenet.domain.errors import Forbidden, Invalid
from telenet.domain.lifecycle import Action, Kind, transition
from telenet.services import critical, outbox, practitioners
from telenet.services.access import center_of, load_for_action, require_center_staff
from telenet.services.critical import clean_items
from telenet.services.hub import Hub, use_case
from telenet.services.request_views import committed_view
from telenet.services.transitions import apply
from telenet.store.models import Center, Report, Request

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
        "preliminary_author": report.preliminary_author_name,
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
    """Save a preliminary report (a new version each time; a critical one is raised at once), or sign the
    final report, which names the last preliminary's author (报告医师) beside its signer (审核医师)."""
    final = bool(body["final"])
    critical = bool(body.get("critical", False))
    items = clean_items(body.get("critical_items")) if critical else []
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
        if final:
            await practitioners.require_may_sign(session, actor.user_id, now.date())
        transition(request.kind, request.state, Action.FINALIZE if final else Action.SAVE_PRELIMINARY)
        latest = (
            await session.execute(
                select(Report)
                .where(Report.request_id == request.id, Report.status == "preliminary")
                .order_by(Report.version.desc())
                .limit(1)
            )
        ).scalar_one_or_none()
        if latest is not None:
            latest.superseded_at = now
        row = Report(
            request_id=request.id,
            status="final" if final else "preliminary",
            version=(latest.version + 1) if latest is not None else 1,
            created_at=now,
            author_id=actor.user_id,
            author_name=actor.display_name or actor.username,
            author_institution_id=actor.institution_id,
            center_id=center.id,
            findings=body["findings"],
            impression=body["impression"],
            critical=critical,
            critical_items=items,
            structured=body.get("structured"),
            preliminary_author_id=latest.author_id if latest is not None else actor.user_id,
            preliminary_author_name=latest.author_name if latest is not None else actor.display_name or actor.username,
        )
        session.add(row)
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
                data={"report_id": row.id, "version": row.version},
            )
            if critical:
                await _raise(hub, session, actor, request, row, items, center, "preliminary", inst_code)
            return await committed_view(uow, actor, request)
        row.signed_at = now
        await session.flush()
        row.digest = canonical_digest(signed_content(request, row))
        await apply(
            hub,
            session,
            request,
            Action.FINALIZE,
            event="request.final",
            center_code=center.code,
            institution_code=inst_code,
            data={"report_id": row.id, "critical": critical},
            final_at=now,
            claim_expires_at=None,
        )
        if critical:
            await _raise(hub, session, actor, request, row, items, center, "final", inst_code)
        await hub.follow_ups.finalized(hub, session, request, row)  # fee line, ORU (wired in telenet.app)
        uow.audit(detail={"report_id": row.id, "digest": row.digest})
        return await committed_view(uow, actor, request)


async def _raise(
    hub: Hub,
    session: AsyncSession,
    actor: Actor,
    request: Request,
    row: Report,
    items: list[str],
    center: Center,
    source: str,
    inst_code: str,
) -> None:
    await critical.raise_finding(
        hub,
        session,
        request,
        items=items,
        raised_by_id=actor.user_id,
        raised_by=actor.display_name or actor.username,
        center=center,
        report=row,
        source=source,
        inst_code=inst_code,
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
        await practitioners.require_may_sign(session, actor.user_id, now.date(), what="an addendum")
        critical_flag = bool(body.get("critical", False))
        items = clean_items(body.get("critical_items")) if critical_flag else []
        row = Report(
            request_id=request.id,
            status="addendum",
            findings=body["text"],
            impression="",
            critical=critical_flag,
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
            data={"report_id": row.id, "critical": critical_flag},
        )
        if critical_flag:
            await _raise(hub, session, actor, request, row, items, signing_center, "addendum", inst_code)
        await outbox.enqueue_result(hub, session, request, row)
        return await committed_view(uow, actor, request)


# The critical-finding use cases live in ``telenet.services.critical``; these names stay for callers.
acknowledge = critical.acknowledge
get_critical = critical.get
escalate_unacknowledged = critical.escalate_unacknowledged
