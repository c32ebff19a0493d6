"""Requests, reading queues, reports, critical findings and consultation threads over REST."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from telenet.api.bodies import path_id
from telenet.api.context import actor_of, dumps, encoded_json_response, hub_of, json_response, read_json
from telenet.api.registry_routes import query_int
from telenet.api.spec import PAGE_ID, TIME, Routes, integer, one_of
from telenet.domain.lifecycle import Kind, RequestState
from telenet.services import consultation, queue, reports, requests

routes = Routes()

_ACTION_RESPONSES = {
    "200": "the request after the action",
    "403": "outside role or scope",
    "404": "no such request",
    "409": "illegal in the current state",
    "422": "invalid body",
}


def request_id(request: web.Request) -> int:
    return path_id(request, what="request id")


async def optional_body(request: web.Request, schema: str) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    body: dict[str, Any] = await read_json(request, schema)
    return body


@routes.add(
    "POST",
    "/api/v1/requests",
    summary="Order a remote read or consultation",
    tag="requests",
    body="api/request-create",
    body_doc={
        "required": ["consent"],  # 422 consent-missing without it
        "allOf": [  # imaging and ECG: a modality (else modality-missing), no participants (participants-not-allowed)
            {
                "if": {"properties": {"kind": {"enum": ["imaging", "ecg"]}}},
                "then": {"required": ["modality"], "properties": {"participants": {"maxItems": 0}}},
            }
        ],
        "properties": {
            "accession_number": {"pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,15}$"},  # else 422 bad-accession
            "scheduled_at": TIME,  # else 422 bad-time
            "consent": {
                "properties": {
                    "given_by": {"type": "string", "minLength": 1, "maxLength": 200},
                    "given_at": TIME,
                }
            },
        },
    },
    roles="requester, integration",
    responses={
        "201": "created, routed, with its route",
        "409": "accession number in use",
        "422": "invalid, missing consent, or no center to route to",
    },
)
async def create_request(request: web.Request) -> web.Response:
    body = await read_json(request, "api/request-create")
    view = await requests.submit_grouped(hub_of(request), actor_of(request), body)
    return json_response(view, status=201, headers={"Location": f"/api/v1/requests/{view['id']}"})


@routes.add(
    "GET",
    "/api/v1/requests",
    summary="Requests in the caller's scope, newest first",
    tag="requests",
    query=(
        ("state", "a request state", one_of(*(s.value for s in RequestState))),
        ("kind", "imaging|ecg|consultation", one_of(*(k.value for k in Kind))),
        ("limit", "page size (max 500)", integer(1, 500)),
        ("before_id", "next page", PAGE_ID),
    ),
)
async def list_requests(request: web.Request) -> web.Response:
    before = request.query.get("before_id")
    return json_response(
        await requests.list_requests(
            hub_of(request),
            actor_of(request),
            state=request.query.get("state"),
            kind=request.query.get("kind"),
            limit=query_int(request, "limit", 50, low=1, high=500),
            before_id=query_int(request, "before_id", 0, high=2**62) if before is not None else None,
        )
    )


@routes.add(
    "GET",
    "/api/v1/requests/{id}",
    summary="One request with route, reports and critical findings",
    tag="requests",
    responses={"200": "the request", "403": "outside scope", "404": "no such request"},
)
async def get_request(request: web.Request) -> web.Response:
    return json_response(await requests.get(hub_of(request), actor_of(request), request_id(request)))


@routes.add(
    "POST",
    "/api/v1/requests/{id}/claim",
    summary="Claim (or renew the lease of) a request",
    tag="queues",
    roles="reader of the center",
    responses=_ACTION_RESPONSES,
)
async def claim(request: web.Request) -> web.Response:
    return json_response(await queue.claim(hub_of(request), actor_of(request), request_id(request)))


@routes.add(
    "POST",
    "/api/v1/requests/{id}/release",
    summary="Give a claimed request back to the queue",
    tag="queues",
    roles="holder, coordinator of the center",
    responses=_ACTION_RESPONSES,
)
async def release(request: web.Request) -> web.Response:
    return json_response(await queue.release(hub_of(request), actor_of(request), request_id(request)))


@routes.add(
    "POST",
    "/api/v1/requests/{id}/report",
    summary="Save a preliminary or sign the final report",
    tag="reports",
    body="api/report",
    roles="reader holding the claim (final: 3+ years of practice)",
    responses=_ACTION_RESPONSES,
)
async def report(request: web.Request) -> web.Response:
    body = await read_json(request, "api/report")
    return json_response(await reports.report(hub_of(request), actor_of(request), request_id(request), body))


@routes.add(
    "POST",
    "/api/v1/requests/{id}/addenda",
    summary="Add a signed addendum to a final report",
    tag="reports",
    body="api/addendum",
    roles="reader of the signing center",
    responses=_ACTION_RESPONSES,
)
async def add_addendum(request: web.Request) -> web.Response:
    body = await read_json(request, "api/addendum")
    view = await reports.addendum(hub_of(request), actor_of(request), request_id(request), body)
    return json_response(view, status=201)


@routes.add(
    "POST",
    "/api/v1/requests/{id}/return",
    summary="Return a request that cannot be read",
    tag="queues",
    body="api/return",
    roles="reader holding the claim",
    responses=_ACTION_RESPONSES,
)
async def return_request(request: web.Request) -> web.Response:
    body = await read_json(request, "api/return")
    return json_response(
        await queue.return_request(
            hub_of(request), actor_of(request), request_id(request), body["reason"], body.get("note")
        )
    )


@routes.add(
    "POST",
    "/api/v1/requests/{id}/resubmit",
    summary="Resubmit a returned request",
    tag="requests",
    body="api/note",
    roles="requesting institution",
    responses=_ACTION_RESPONSES,
)
async def resubmit(request: web.Request) -> web.Response:
    body = await optional_body(request, "api/note")
    return json_response(
        await requests.resubmit(hub_of(request), actor_of(request), request_id(request), body.get("note"))
    )


@routes.add(
    "POST",
    "/api/v1/requests/{id}/escalate",
    summary="Re-route to a higher-tier center",
    tag="queues",
    body="api/escalate",
    roles="reader holding the claim, coordinator of the center",
    responses=_ACTION_RESPONSES,
)
async def escalate(request: web.Request) -> web.Response:
    body = await read_json(request, "api/escalate")
    return json_response(await queue.escalate(hub_of(request), actor_of(request), request_id(request), body["reason"]))


@routes.add(
    "POST",
    "/api/v1/requests/{id}/cancel",
    summary="Cancel a request not yet being read",
    tag="requests",
    body="api/note",
    roles="requesting institution",
    responses=_ACTION_RESPONSES,
)
async def cancel(request: web.Request) -> web.Response:
    body = await optional_body(request, "api/note")
    return json_response(
        await requests.cancel(
            hub_of(request), actor_of(request), request_id(request), body.get("reason") or body.get("note")
        )
    )


@routes.add(
    "POST",
    "/api/v1/requests/{id}/data-complete",
    summary="The study or ECG has arrived",
    tag="requests",
    body="api/data-complete",
    roles="integration",
    responses=_ACTION_RESPONSES,
)
async def data_complete(request: web.Request) -> web.Response:
    body = await optional_body(request, "api/data-complete")
    return json_response(
        await requests.data_complete(hub_of(request), actor_of(request), request_id(request), body.get("signal", "api"))
    )


@routes.add(
    "POST",
    "/api/v1/requests/{id}/consent",
    summary="Record informed consent (知情同意) on an order that arrived without it",
    tag="requests",
    body="api/consent",
    body_doc={"properties": {"given_at": TIME}},  # else 422 bad-time
    roles="requesting institution",
    responses=_ACTION_RESPONSES,
)
async def record_consent(request: web.Request) -> web.Response:
    body = await read_json(request, "api/consent")
    view = await requests.record_consent(
        hub_of(request), actor_of(request), request_id(request), body["given_by"], body["given_at"]
    )
    return json_response(view)


@routes.add("GET", "/api/v1/requests/{id}/messages", summary="A consultation's message thread", tag="consultations")
async def list_messages(request: web.Request) -> web.Response:
    return json_response(await consultation.list_messages(hub_of(request), actor_of(request), request_id(request)))


@routes.add(
    "POST",
    "/api/v1/requests/{id}/messages",
    summary="Post to a consultation's thread",
    tag="consultations",
    body="api/message",
    responses={"201": "posted", **_ACTION_RESPONSES},
)
async def post_message(request: web.Request) -> web.Response:
    body = await read_json(request, "api/message")
    view = await consultation.post_message(hub_of(request), actor_of(request), request_id(request), body["body"])
    return json_response(view, status=201)


@routes.add(
    "GET",
    "/api/v1/centers/{code}/worklist",
    summary="A center's reading queue, most urgent first",
    tag="queues",
    roles="readers and coordinators of the center",
    query=(("limit", "page size (max 200)", integer(1, 200)), ("offset", "page offset", integer(0, 10**9))),
)
async def worklist(request: web.Request) -> web.Response:
    page = await queue.worklist(
        hub_of(request),
        actor_of(request),
        request.match_info["code"],
        limit=query_int(request, "limit", 50, low=1, high=200),
        offset=query_int(request, "offset", 0, high=10**9),
    )
    return encoded_json_response(page.encoded(dumps))


def critical_id(request: web.Request) -> int:
    return path_id(request, what="critical finding id")


@routes.add("GET", "/api/v1/critical/{id}", summary="A critical finding with its timeline", tag="critical")
async def get_critical(request: web.Request) -> web.Response:
    return json_response(await reports.get_critical(hub_of(request), actor_of(request), critical_id(request)))


@routes.add(
    "POST",
    "/api/v1/critical/{id}/ack",
    summary="Acknowledge a critical finding with read-back",
    tag="critical",
    body="api/critical-ack",
    roles="requesting institution",
    responses={"200": "acknowledged", "409": "already acknowledged", "403": "not the requesting side"},
)
async def ack_critical(request: web.Request) -> web.Response:
    body = await read_json(request, "api/critical-ack")
    return json_response(await reports.acknowledge(hub_of(request), actor_of(request), critical_id(request), body))
