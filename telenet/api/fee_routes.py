"""Fees and settlements, result recognition, assessment figures, and the Prometheus ``/metrics``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from telenet.api.bodies import path_id
from telenet.api.context import EXTRA, actor_of, hub_of, read_json
from telenet.api.guards import require_metrics_access
from telenet.api.registry_routes import query_int
from telenet.api.spec import (
    DATE,
    DATE_PATTERN,
    MONTH,
    PAGE_ID,
    TIME,
    TIME_PATTERN,
    Query,
    Routes,
    in_years,
    integer,
    one_of,
    written_as,
)
from telenet.domain.errors import Invalid
from telenet.services import assessment, fees, recognition, settlement
from telenet.services.metrics import Family, MetricsRegistry

routes = Routes()

_PERIOD = {**MONTH, "x-required": True}
_REQUIRED_TEXT = {"type": "string", "minLength": 1, "x-required": True}
_BOUND = {"anyOf": [DATE, TIME]}


def _bound(request: web.Request, name: str) -> str | None:
    return written_as(request.query.get(name), name, DATE_PATTERN, TIME_PATTERN)


_PERIOD_QUERY: tuple[Query, ...] = (
    ("from", "start (inclusive): YYYY-MM-DD (midnight Asia/Shanghai) or ISO 8601 time with offset", _BOUND),
    ("to", "end (exclusive, after from): YYYY-MM-DD (midnight Asia/Shanghai) or ISO 8601 time with offset", _BOUND),
)


def _csv_response(text: str, filename: str) -> web.Response:
    return web.Response(
        body=text.encode("utf-8"),
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{filename}"',
        },
    )


def _format(request: web.Request) -> str:
    value = request.query.get("format", "json")
    if value not in ("json", "csv"):
        raise Invalid("format is json or csv", code="bad-parameter")
    return value


@routes.add(
    "GET",
    "/api/v1/fee-schedule",
    summary="The versioned fee schedule (integer fen) and how a price is chosen",
    tag="fees",
    query=(("on", "YYYY-MM-DD: only the entries in force that day", DATE),),
)
async def get_fee_schedule(request: web.Request) -> web.Response:
    raw = written_as(request.query.get("on"), "on", DATE_PATTERN)
    try:
        on = date.fromisoformat(raw) if raw is not None else None
    except ValueError:
        raise Invalid("on must be a date YYYY-MM-DD", code="bad-parameter") from None
    in_years(on, "on")
    return web.json_response(await fees.fee_schedule(hub_of(request), actor_of(request), on))


@routes.add(
    "GET",
    "/api/v1/fees",
    summary="Fee ledger lines involving an institution (own institution; subtree for coordinators and admins)",
    tag="fees",
    roles="requester, integration, coordinator, admin",
    query=(
        ("institution", "institution code (default: your own)"),
        *_PERIOD_QUERY,
        ("service", "imaging|ecg|consultation", one_of(*fees.SERVICES)),
        ("limit", "page size (max 5000)", integer(1, 5000)),
        ("before_id", "next page: lines below this id", PAGE_ID),
    ),
    responses={"200": "lines, newest first, and totals over the selection", "403": "outside your scope"},
)
async def list_fees(request: web.Request) -> web.Response:
    before = request.query.get("before_id")
    result = await fees.list_fees(
        hub_of(request),
        actor_of(request),
        institution=request.query.get("institution"),
        start=in_years(assessment.parse_bound(_bound(request, "from"), "from"), "from"),
        end=in_years(assessment.parse_bound(_bound(request, "to"), "to"), "to"),
        service=request.query.get("service"),
        limit=query_int(request, "limit", 500, low=1, high=5000),
        before_id=query_int(request, "before_id", 0, high=2**62) if before is not None else None,
    )
    return web.json_response(result)


@routes.add(
    "POST",
    "/api/v1/fees/{id}/refund",
    summary="Refund a charge: a new negative line referring to it (nothing is edited)",
    tag="fees",
    roles="admin over both institutions of the line",
    body="api/fee-refund",
    responses={
        "201": "the refund line",
        "404": "no such line",
        "409": "already refunded",
        "422": "no reason, or the line is itself a refund",
    },
)
async def refund_fee(request: web.Request) -> web.Response:
    line_id = path_id(request, what="fee line id")
    body = await read_json(request, "api/fee-refund")
    line = await fees.refund(hub_of(request), actor_of(request), line_id, body["reason"])
    return web.json_response(line, status=201)


@routes.add(
    "GET",
    "/api/v1/settlements",
    summary="Monthly settlement statement per (inviting, invited) institution pair; JSON or CSV",
    tag="fees",
    roles="coordinator, admin",
    query=(
        ("period", "YYYY-MM (a month in Asia/Shanghai), required", _PERIOD),
        ("institution", "institution code (default: your own); pairs involving its subtree"),
        ("format", "json (default) or csv (UTF-8 with BOM, a total row last)", one_of("json", "csv")),
    ),
)
async def get_settlement(request: web.Request) -> web.Response:
    period = request.query.get("period")
    if not period:
        raise Invalid("period=YYYY-MM is required", code="bad-parameter")
    if not re.fullmatch(MONTH["pattern"], period):
        raise Invalid(f"period must look like YYYY-MM (years 1900 to 9998), got {period!r}")  # as period_bounds
    output = _format(request)
    statement = await settlement.settlement(
        hub_of(request), actor_of(request), period, institution=request.query.get("institution")
    )
    if output == "csv":
        return _csv_response(settlement.settlement_csv(statement), f"settlement-{period}.csv")
    return web.json_response(statement)


@routes.add(
    "GET",
    "/api/v1/patients/{id}/recognizable-results",
    summary="Final imaging / ECG results of the person, judged for recognition (互认) at an institution",
    tag="recognition",
    roles="requester, integration, coordinator, admin who may see the institution",
    query=(("at", "code of the accepting institution; {id} is the patient's HIS id there", _REQUIRED_TEXT),),
    path_params={"id": {"type": "string", "minLength": 1}},
    responses={
        "200": "results with recognizable / reason / expires_at",
        "403": "outside your scope",
        "404": "no such patient at that institution",
    },
)
async def recognizable_results(request: web.Request) -> web.Response:
    at = request.query.get("at")
    if not at:
        raise Invalid("at=<institution code> is required", code="bad-parameter")
    result = await recognition.recognizable_results(hub_of(request), actor_of(request), request.match_info["id"], at)
    return web.json_response(result)


@routes.add(
    "POST",
    "/api/v1/recognitions",
    summary="Record a recognition decision: recognized (fee avoided recorded) or not, with a policy reason",
    tag="recognition",
    roles="requester (a clinician of the accepting institution)",
    body="api/recognition",
    body_doc={  # the decision's rules (domain.recognition), checked by the service with code invalid
        "allOf": [
            {
                "if": {"properties": {"decision": {"const": "recognized"}}},
                "then": {"not": {"required": ["reason_code"]}},
            },
            {"if": {"properties": {"decision": {"const": "not_recognized"}}}, "then": {"required": ["reason_code"]}},
            {
                "if": {"properties": {"reason_code": {"const": "physician_judgement"}}, "required": ["reason_code"]},
                "then": {"required": ["note"], "properties": {"note": {"pattern": "[^\\s\\x1c-\\x1f\\x85]"}}},
            },
        ]
    },
    responses={"201": "the decision", "404": "no such patient or result", "422": "invalid, or not recognizable"},
)
async def record_recognition(request: web.Request) -> web.Response:
    body = await read_json(request, "api/recognition")
    return web.json_response(await recognition.record_decision(hub_of(request), actor_of(request), body), status=201)


@routes.add(
    "GET",
    "/api/v1/stats/assessment",
    summary="Assessment figures (考核) of a network, center or institution over a period; JSON or CSV",
    tag="assessment",
    roles="coordinator, admin (in scope)",
    query=(
        ("network", "network code: requests ordered by its members"),
        ("center", "center code: requests at that center"),
        ("institution", "institution code: requests ordered in its subtree (default: your own)"),
        *_PERIOD_QUERY,
        ("format", "json (default) or csv (figure,value rows; UTF-8 with BOM)", one_of("json", "csv")),
    ),
)
async def get_assessment(request: web.Request) -> web.Response:
    output = _format(request)
    result = await assessment.compute(
        hub_of(request),
        actor_of(request),
        network=request.query.get("network"),
        center=request.query.get("center"),
        institution=request.query.get("institution"),
        start=in_years(assessment.parse_bound(_bound(request, "from"), "from"), "from"),
        end=in_years(assessment.parse_bound(_bound(request, "to"), "to"), "to"),
    )
    if output == "csv":
        return _csv_response(assessment.to_csv(result), "assessment.csv")
    return web.json_response(result)


# --- /metrics ----------------------------------------------------------------------------------------------


def metrics_registry(app: web.Application) -> MetricsRegistry:
    """The registry of this application (created on first use): the composition root hands it to the
    gateways so that they add their tallies and probes (see ``telenet.services.metrics``)."""
    extra: dict[str, Any] = app[EXTRA]
    registry = extra.get("metrics")
    if registry is None:
        registry = extra["metrics"] = MetricsRegistry()
    assert isinstance(registry, MetricsRegistry)
    return registry


def _prometheus(family: Family) -> Metric:
    metric: GaugeMetricFamily | CounterMetricFamily
    if family.kind == "counter":
        metric = CounterMetricFamily(family.name, family.help, labels=family.label_names)
    else:
        metric = GaugeMetricFamily(family.name, family.help, labels=family.label_names)
    for sample in family.samples:
        metric.add_metric([value for _, value in sample.labels], sample.value)
    return metric


class _Snapshot:
    """A prometheus-client collector over families computed for this one scrape."""

    def __init__(self, families: list[Family]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            yield _prometheus(family)


@routes.add(
    "GET",
    "/metrics",
    summary="Operational metrics in the Prometheus text format (configured networks, else admin/integration token)",
    tag="operations",
    public=True,
    responses={"200": "metrics", "401": "no token from outside the configured networks", "403": "role"},
)
async def metrics(request: web.Request) -> web.Response:
    await require_metrics_access(request)
    families = await metrics_registry(request.app).collect(hub_of(request))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families))
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
