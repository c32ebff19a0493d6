"""Clinical-fidelity endpoints: critical findings raised from the claim and their phone steps, and the
practitioner registry that decides who may sign."""

from __future__ import annotations

from aiohttp import web

from telenet.api.context import actor_of, hub_of, json_response, read_json
from telenet.api.request_routes import critical_id, request_id
from telenet.api.spec import Routes
from telenet.services import coordination, critical, practitioners

routes = Routes()


@routes.add(
    "POST",
    "/api/v1/requests/{id}/critical",
    summary="Raise a critical finding (危急值) the moment it is found",
    tag="critical",
    body="api/critical-raise",
    roles="reader holding the claim (any seniority)",
    responses={
        "201": "raised: the finding with its timeline",
        "403": "not a reader of the center",
        "404": "no such request",
        "409": "not holding the claim, or these items were already raised",
        "422": "invalid body",
    },
)
async def raise_critical(request: web.Request) -> web.Response:
    body = await read_json(request, "api/critical-raise")
    view = await critical.raise_from_claim(hub_of(request), actor_of(request), request_id(request), body)
    return json_response(view, status=201, headers={"Location": f"/api/v1/critical/{view['id']}"})


@routes.add(
    "POST",
    "/api/v1/critical/{id}/calls",
    summary="Record the phone call about a critical finding (who called whom, when, read-back, 复述确认)",
    tag="critical",
    body="api/critical-call",
    roles="readers and coordinators of the reading center",
    responses={"201": "recorded: the finding with its timeline", "403": "not of the reading center"},
)
async def record_call(request: web.Request) -> web.Response:
    body = await read_json(request, "api/critical-call")
    view = await critical.record_call(hub_of(request), actor_of(request), critical_id(request), body)
    return json_response(view, status=201)


@routes.add(
    "GET",
    "/api/v1/practitioners/{username}",
    summary="A physician's registry record (title, practice-since, licence)",
    tag="registry",
    roles="admins and coordinators of the physician's institution or above",
)
async def get_practitioner(request: web.Request) -> web.Response:
    return json_response(await practitioners.get(hub_of(request), actor_of(request), request.match_info["username"]))


@routes.add(
    "PUT",
    "/api/v1/practitioners/{username}",
    summary="Record a physician's title, practice-since date and licence number",
    tag="registry",
    body="api/practitioner",
    roles="admins of the physician's institution or above",
    responses={"200": "the record", "403": "not an admin of the subtree", "404": "no such account"},
)
async def put_practitioner(request: web.Request) -> web.Response:
    body = await read_json(request, "api/practitioner")
    return json_response(
        await practitioners.put(hub_of(request), actor_of(request), request.match_info["username"], body)
    )


@routes.add(
    "POST",
    "/api/v1/requests/{id}/reassign",
    summary="Release a reader's claim or hand the request to a named reader of the center",
    tag="queues",
    body="api/reassign",
    roles="coordinator of the center",
    responses={
        "200": "the request after the reassignment",
        "403": "not a coordinator of the center",
        "409": "not claimed (release) or already held by that reader",
        "422": "invalid body, or not a reader of the center",
    },
)
async def reassign(request: web.Request) -> web.Response:
    body = await read_json(request, "api/reassign")
    return json_response(await coordination.reassign(hub_of(request), actor_of(request), request_id(request), body))
