"""The assessment figures (考核) of a selection of requests over a period, for coordinators and admins.

The selection: ``institution`` — requests ordered by institutions in its subtree (the requesting side);
``center`` — requests at that center (the center that signed, once final); ``network`` — requests
ordered by the network's members. Filters combine (AND); with none, the caller's own institution. The
period ``[from, to)`` anchors each figure on its own moment: volumes on the order time, turnaround and
SLA on the final report, returns / escalations / breaches on when they happened, critical findings on
when they were raised, recognition decisions and fee lines on when they were recorded. Recognition
decisions are selected by who decided (institution subtree, network members) or by the producing center.
"""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from telenet.domain import assessment as figures
from telenet.domain.access import Actor, Role
from telenet.domain.errors import Forbidden, Invalid, NotFound
from telenet.domain.fees import period_bounds
from telenet.domain.routing import LOCAL_TZ
from telenet.domain.tiers import is_within
from telenet.services.access import center_by_code, require_role
from telenet.services.fees import check_period, institution_by_code
from telenet.services.hub import Hub, UnitOfWork, read_use_case
from telenet.store.models import (
    CriticalFinding,
    Event,
    FeeLine,
    Institution,
    Network,
    NetworkMember,
    RecognitionDecision,
    Report,
    Request,
    RouteStep,
)

SELECTION_DEFINITIONS = {
    "institution": "requests ordered by institutions in this institution's subtree",
    "center": "requests at this center (for final requests: the center that signed)",
    "network": "requests ordered by the network's member institutions",
    "period": "half-open [from, to); each figure is anchored on its own moment (see the module docs)",
}


class Selection:
    """The request predicate and the recognition predicate of the chosen filters."""

    def __init__(self) -> None:
        self.requests: list[ColumnElement[bool]] = []
        self.decisions: list[ColumnElement[bool]] = []
        self.labels: dict[str, str | None] = {"network": None, "center": None, "institution": None}
        # The institution whose figures these are (for the audit row): the institution, the center's host, or
        # the network's lead, the narrowest chosen.
        self.owner_path: str | None = None


async def _select(
    session: AsyncSession,
    actor: Actor,
    network: str | None,
    center: str | None,
    institution: str | None,
    uow: UnitOfWork | None = None,
) -> Selection:
    chosen = Selection()
    if institution is None and center is None and network is None:
        own = await session.get(Institution, actor.institution_id)
        assert own is not None
        institution = own.code
    if institution is not None:
        inst = await institution_by_code(session, institution)
        if uow is not None:
            uow.audit(object_path=inst.path)
        if not actor.sees_institution(inst.path):
            raise Forbidden(f"{inst.code} is outside your scope", code="scope")
        chosen.requests.append(Request.requesting_path.startswith(inst.path, autoescape=True))
        chosen.decisions.append(RecognitionDecision.institution_path.startswith(inst.path, autoescape=True))
        chosen.labels["institution"] = inst.code
        chosen.owner_path = inst.path
    if center is not None:
        row, host = await center_by_code(session, center)
        if uow is not None and chosen.owner_path is None:
            uow.audit(object_path=host.path)
        if not (actor.sees_center(row.code, host.path) or is_within(host.path, actor.institution_path)):
            raise Forbidden(f"{row.code} is outside your scope", code="scope")
        chosen.requests.append(Request.center_id == row.id)
        chosen.decisions.append(RecognitionDecision.producing_center_id == row.id)
        chosen.labels["center"] = row.code
        chosen.owner_path = chosen.owner_path or host.path
    if network is not None:
        net = (await session.execute(select(Network).where(Network.code == network))).scalar_one_or_none()
        if net is None:
            raise NotFound(f"no network {network!r}")
        lead = await session.get(Institution, net.lead_id)
        assert lead is not None
        if uow is not None and chosen.owner_path is None and center is None:
            uow.audit(object_path=lead.path)
        if not is_within(lead.path, actor.institution_path):
            raise Forbidden(f"{net.code} is led by {lead.code}, outside your scope", code="scope")
        members = select(NetworkMember.institution_id).where(NetworkMember.network_id == net.id)
        chosen.requests.append(Request.requesting_institution_id.in_(members))
        chosen.decisions.append(RecognitionDecision.institution_id.in_(members))
        chosen.labels["network"] = net.code
        chosen.owner_path = chosen.owner_path or lead.path
    return chosen


def _period(start: datetime | None, end: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """Defaults: the current month in Asia/Shanghai."""
    check_period(start, end)
    month_start, month_end = period_bounds(now.astimezone(LOCAL_TZ).strftime("%Y-%m"), LOCAL_TZ)
    return start or month_start, end or month_end


_Query = TypeVar("_Query", bound=Select[*tuple[Any, ...]])


def _within(query: _Query, selection: Selection) -> _Query:
    return query.where(*selection.requests) if selection.requests else query


async def compute(
    hub: Hub,
    actor: Actor,
    *,
    network: str | None = None,
    center: str | None = None,
    institution: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> dict[str, Any]:
    """Every figure of the assessment for the selection and period, with the definitions applied."""
    require_role(actor, Role.COORDINATOR, Role.ADMIN, action="read assessment figures")
    now = hub.clock.now()
    start, end = _period(start, end, now)
    async with read_use_case(hub, actor, "assessment.read", "assessment") as uow:
        session = uow.session
        chosen = await _select(session, actor, network, center, institution, uow)
        uow.audit(
            object_path=chosen.owner_path or actor.institution_path, detail={**chosen.labels, "from": start.isoformat()}
        )

        def during(column: Any) -> list[ColumnElement[bool]]:
            return [column >= start, column < end]

        ordered = (
            await session.execute(
                _within(
                    select(Request.kind, Request.priority, Institution.tier, Request.state)
                    .join(Institution, Institution.id == Request.requesting_institution_id)
                    .where(*during(Request.ordered_at)),
                    chosen,
                )
            )
        ).all()
        finished = (
            await session.execute(
                _within(
                    select(
                        Request.priority,
                        Request.ordered_at,
                        Request.queued_at,
                        Request.final_at,
                        Request.due_at,
                        Request.sla_breached_at,
                    ).where(Request.state == "final", *during(Request.final_at)),
                    chosen,
                )
            )
        ).all()
        samples = [
            figures.FinishedRequest(p, o, q, f, d, b is not None)
            for p, o, q, f, d, b in finished
            if q is not None and f is not None and d is not None
        ]

        async def count(query: Select[Any]) -> int:
            return int((await session.execute(_within(query, chosen))).scalar_one())

        returns = await count(
            select(func.count())
            .select_from(Event)
            .join(Request, Request.id == Event.request_id)
            .where(Event.name == "request.returned", *during(Event.at))
        )
        breaches = await count(
            select(func.count())
            .select_from(Event)
            .join(Request, Request.id == Event.request_id)
            .where(Event.name == "request.sla_breached", *during(Event.at))
        )
        steps = (
            await session.execute(
                _within(
                    select(RouteStep.action, RouteStep.actor)
                    .join(Request, Request.id == RouteStep.request_id)
                    .where(RouteStep.action.in_(("escalate", "alert")), *during(RouteStep.at)),
                    chosen,
                )
            )
        ).all()
        escalated = [actor_name for action, actor_name in steps if action == "escalate"]
        criticals = (
            await session.execute(
                _within(
                    select(CriticalFinding.raised_at, CriticalFinding.acknowledged_at, CriticalFinding.escalation_level)
                    .join(Request, Request.id == CriticalFinding.request_id)
                    .where(*during(CriticalFinding.raised_at)),
                    chosen,
                )
            )
        ).all()
        decisions = (
            await session.execute(
                select(
                    RecognitionDecision.decision, RecognitionDecision.reason_code, RecognitionDecision.fee_avoided_fen
                ).where(*during(RecognitionDecision.at), *chosen.decisions)
            )
        ).all()
        lines = (
            await session.execute(
                _within(
                    select(FeeLine.price_fen, FeeLine.inviting_fen, FeeLine.invited_fen, FeeLine.refund_of)
                    .join(Request, Request.id == FeeLine.request_id)
                    .where(*during(FeeLine.at)),
                    chosen,
                )
            )
        ).all()
        unpriced = await count(
            select(func.count())
            .select_from(Report)
            .join(Request, Request.id == Report.request_id)
            .outerjoin(FeeLine, FeeLine.report_id == Report.id)
            .where(Report.status == "final", FeeLine.id.is_(None), *during(Report.signed_at))
        )
        return {
            "selection": {
                **chosen.labels,
                "from": start.isoformat(),
                "to": end.isoformat(),
                "timezone": str(LOCAL_TZ),
                "definitions": SELECTION_DEFINITIONS,
            },
            "generated_at": now.isoformat(),
            "volumes": figures.volumes(figures.OrderedRequest(k, p, t, s) for k, p, t, s in ordered),
            "turnaround": figures.turnaround(samples),
            "returns": {"count": returns, "definition": "requests returned (退回) by a reader in the period"},
            "escalations": {
                "total": len(escalated),
                "on_sla_breach": sum(1 for name in escalated if name == "system"),
                "by_staff": sum(1 for name in escalated if name != "system"),
                "failed": len(steps) - len(escalated),
                "definition": (
                    "moves to a higher-tier center in the period: by the SLA sweeper on a breach, or by a reader "
                    "or coordinator; failed = no higher center could take it and the coordinators were alerted"
                ),
            },
            "sla_breaches": {"count": breaches, "definition": "SLA breaches recorded by the sweeper in the period"},
            "critical_findings": figures.critical_findings(figures.CriticalSample(r, a, e) for r, a, e in criticals),
            "recognition": figures.recognition(figures.DecisionSample(d, c, f) for d, c, f in decisions),
            "fees": figures.fee_totals(
                (figures.FeeSample(p, i, v, r is not None) for p, i, v, r in lines), finals_without_fee=unpriced
            ),
        }


def to_csv(result: dict[str, Any]) -> str:
    """The figures in long form, ``figure,value`` one a row, UTF-8 with a byte-order mark."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(("figure", "value"))
    writer.writerows(figures.flatten(result))
    return out.getvalue()


def parse_bound(raw: str | None, name: str) -> datetime | None:
    """``from`` / ``to``: an ISO 8601 time with offset, or a date (midnight in Asia/Shanghai)."""
    if raw is None:
        return None
    try:
        if len(raw) == 10:
            return datetime.fromisoformat(raw).replace(tzinfo=LOCAL_TZ)
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise Invalid(f"{name} must be a date (YYYY-MM-DD) or an ISO 8601 time", code="bad-parameter") from None
    if moment.tzinfo is None:
        raise Invalid(f"{name} needs a UTC offset (e.g. 2026-03-01T00:00:00+08:00)", code="bad-parameter")
    return moment
