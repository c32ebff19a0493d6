"""The administrator's screens: the registry as a tree of the five tiers with centers and agreements in force,
the assessment dashboard (SVG charts drawn here, each with its CSV), monthly settlements with their CSV, and
the audit search ("who opened this patient's data"). Figures come from the same services as the API."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from telenet.api.context import HUB
from telenet.domain.access import Role
from telenet.domain.errors import Forbidden, Invalid
from telenet.services import assessment, console_views, outbox, registry, settlement
from telenet.web import charts
from telenet.web.render import SHANGHAI, PageContext, page, render

WEEKS = 8


def _admin(ctx: PageContext) -> None:
    assert ctx.actor is not None
    if ctx.actor.role is not Role.ADMIN:
        raise Forbidden("these screens are the administrators'", code="role")


@page
async def registry_page(request: web.Request, ctx: PageContext) -> web.StreamResponse:
    _admin(ctx)
    assert ctx.actor is not None
    hub = request.app[HUB]
    tree = await console_views.registry_tree(hub, ctx.actor, hub.clock.now().astimezone(SHANGHAI).date())
    backlog = await outbox.backlog(hub, ctx.actor, status="pending", limit=50)
    return await render(ctx, "admin_registry.html", tree=tree, hl7=backlog)


async def _chart_rows(request: web.Request, ctx: PageContext) -> dict[str, tuple[str, list[tuple[str, Any]], str]]:
    """Every chart of the dashboard: key → (title, rows, unit)."""
    assert ctx.actor is not None
    hub = request.app[HUB]
    now = hub.clock.now() + timedelta(minutes=1)  # the period's end is exclusive; include this minute
    start = now - timedelta(weeks=WEEKS)
    whole = await assessment.compute(hub, ctx.actor, start=start, end=now)
    t = ctx.t
    volumes = whole["volumes"]
    turnaround = whole["turnaround"]["by_priority"]
    weekly = []
    for week in range(WEEKS):
        begin = start + timedelta(weeks=week)
        figures = await assessment.compute(hub, ctx.actor, start=begin, end=begin + timedelta(weeks=1))
        compliance = figures["turnaround"]["overall"]["sla_compliance"]
        label = begin.astimezone(SHANGHAI).strftime("%m-%d")
        weekly.append((label, None if compliance is None else round(100 * compliance, 1)))
    recognition = whole["recognition"]
    rate = recognition["recognition_rate"]
    return {
        "tier": (t("chart.by_tier"), [(t(f"tier.{k}"), v) for k, v in volumes["by_requesting_tier"].items()], ""),
        "kind": (t("chart.by_kind"), [(t(f"kind.{k}"), v) for k, v in volumes["by_kind"].items()], ""),
        "turnaround": (
            t("chart.turnaround"),
            [
                (f"{t('priority.' + p)} {t('chart.' + q)}", _rounded(f["ordered_to_final_minutes"][q]))
                for p, f in turnaround.items()
                for q in ("median", "p90")
            ],
            " " + t("minutes"),
        ),
        "sla": (t("chart.sla_weekly"), weekly, "%"),
        "recognition": (
            t("chart.recognition"),
            [
                (t("chart.recognition_rate"), None if rate is None else round(100 * rate, 1)),
                (t("chart.fees_avoided"), recognition["fees_avoided_fen"] / 100),
            ],
            "",
        ),
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@page
async def assessment_page(request: web.Request, ctx: PageContext) -> web.StreamResponse:
    _admin(ctx)
    rows = await _chart_rows(request, ctx)
    svgs = [(key, title, charts.bars(title, data, unit=unit)) for key, (title, data, unit) in rows.items()]
    return await render(ctx, "admin_assessment.html", charts=svgs)


def _csv(rows: list[list[Any]], filename: str) -> web.Response:
    out = io.StringIO()
    out.write("\ufeff")
    csv.writer(out, lineterminator="\r\n").writerows(rows)
    return web.Response(
        text=out.getvalue(),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@page
async def chart_csv(request: web.Request, ctx: PageContext) -> web.StreamResponse:
    _admin(ctx)
    key = request.match_info["chart"]
    rows = await _chart_rows(request, ctx)
    if key not in rows:
        raise web.HTTPNotFound()
    title, data, unit = rows[key]
    return _csv([[title, unit.strip()], *[[label, "" if v is None else v] for label, v in data]], f"{key}.csv")


@page
async def settlements_page(request: web.Request, ctx: PageContext) -> web.StreamResponse:
    _admin(ctx)
    assert ctx.actor is not None
    period = request.query.get("period") or request.app[HUB].clock.now().astimezone(SHANGHAI).strftime("%Y-%m")
    statement = await settlement.settlement(request.app[HUB], ctx.actor, period)
    if request.query.get("format") == "csv":
        return web.Response(
            text=settlement.settlement_csv(statement),
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="settlement-{period}.csv"'},
        )
    return await render(ctx, "admin_settlements.html", period=period, s=statement)


def _bound(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value).replace(tzinfo=SHANGHAI)
    except ValueError:
        raise Invalid(f"{name}: a date and time", code="bad-parameter") from None


@page
async def audit_page(request: web.Request, ctx: PageContext) -> web.StreamResponse:
    _admin(ctx)
    assert ctx.actor is not None
    query = request.query
    found = await registry.list_audit(
        request.app[HUB],
        ctx.actor,
        institution=query.get("institution") or None,
        action=query.get("action") or None,
        since=_bound(query.get("since"), "since"),
        until=_bound(query.get("until"), "until"),
        limit=200,
    )
    items = found["items"]
    patient = (query.get("object") or "").strip()
    if patient:
        items = [e for e in items if patient in str(e.get("object_id") or "") or patient in str(e.get("detail") or "")]
    return await render(ctx, "admin_audit.html", items=items, q=query)


def install(app: web.Application) -> set[tuple[str, str]]:
    table = [
        ("GET", "/admin/registry", registry_page),
        ("GET", "/admin/assessment", assessment_page),
        ("GET", "/admin/assessment/{chart}.csv", chart_csv),
        ("GET", "/admin/settlements", settlements_page),
        ("GET", "/admin/audit", audit_page),
    ]
    for method, path, handler in table:
        app.router.add_route(method, path, handler)
    return {(method, path) for method, path, _ in table}
