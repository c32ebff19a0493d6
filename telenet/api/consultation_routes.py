"""A consultation's session over REST: time proposed and agreed, the session started, the invited centers and
specialists (MDT). The opinion is the consultation's signed report (``POST /api/v1/requests/{id}/report``);
cancelling is the request's cancel."""

from __future__ import annotations

from aiohttp import web

from telenet.api.context import actor_of, hub_of, json_response, read_json
from telenet.api.request_routes import request_id
from telenet.api.signalling import evict
from telenet.api.spec import Routes
from telenet.services import consultation

routes = Routes()

_RESPONSES = {
    "200": "the consultation after the step",
    "403": "not the requesting side nor the consultant center",
    "404": "no such consultation",
    "409": "illegal in the consultation's phase (illegal-transition, own-proposal, not-accepted)",
    "422": "invalid body, not a consultation",
}


@routes.add(
    "GET",
    "/api/v1/consultations/{id}",
    summary="A consultation's session: phase, proposed and agreed time, centers, participants, timeline",
    tag="consultations",
    roles="whoever may see the consultation (participants only while invited)",
    responses={"200": "the consultation", "403": "outside scope", "404": "no such request"},
)
async def get_consultation(request: web.Request) -> web.Response:
    return json_response(await consultation.get(hub_of(request), actor_of(request), request_id(request)))


@routes.add(
    "POST",
    "/api/v1/consultations/{id}/time",
    summary="Propose a session time (the first, a counter-proposal or a new one); the other side agrees it",
    tag="consultations",
    body="api/consultation-time",
    roles="the requesting side or the consultant center",
    responses=_RESPONSES,
)
async def propose_time(request: web.Request) -> web.Response:
    body = await read_json(request, "api/consultation-time")
    return json_response(await consultation.propose_time(hub_of(request), actor_of(request), request_id(request), body))


@routes.add(
    "POST",
    "/api/v1/consultations/{id}/time/agree",
    summary="Agree the proposed time: the session is scheduled",
    tag="consultations",
    roles="the side that did not propose the time",
    responses=_RESPONSES,
)
async def agree_time(request: web.Request) -> web.Response:
    return json_response(await consultation.agree_time(hub_of(request), actor_of(request), request_id(request)))


@routes.add(
    "POST",
    "/api/v1/consultations/{id}/start",
    summary="Start the scheduled session (the consultation must be accepted: claimed)",
    tag="consultations",
    roles="the consultant holding the consultation, its center's coordinators",
    responses=_RESPONSES,
)
async def start(request: web.Request) -> web.Response:
    return json_response(await consultation.start(hub_of(request), actor_of(request), request_id(request)))


@routes.add(
    "POST",
    "/api/v1/consultations/{id}/centers",
    summary="Invite a center beside the consultant center (MDT)",
    tag="consultations",
    body="api/consultation-center",
    roles="the requesting side or the consultant center",
    responses=_RESPONSES,
)
async def invite_center(request: web.Request) -> web.Response:
    body = await read_json(request, "api/consultation-center")
    view = await consultation.invite_center(hub_of(request), actor_of(request), request_id(request), body["center"])
    return json_response(view)


@routes.add(
    "DELETE",
    "/api/v1/consultations/{id}/centers/{code}",
    summary="End a center's invitation, and the access of its participants at once",
    tag="consultations",
    roles="the requesting side or the consultant center",
    responses=_RESPONSES,
)
async def remove_center(request: web.Request) -> web.Response:
    rid = request_id(request)
    view = await consultation.remove_center(hub_of(request), actor_of(request), rid, request.match_info["code"])
    for person in view["participants"]:
        if not person["active"]:
            await evict(request.app, rid, person["username"], "participant-removed: the center is no longer invited")
    return json_response(view)


@routes.add(
    "POST",
    "/api/v1/consultations/{id}/participants",
    summary="Invite a specialist (a reader or coordinator of the consultant center or of an invited center)",
    tag="consultations",
    body="api/consultation-participant",
    roles="the requesting side or the consultant center",
    responses=_RESPONSES,
)
async def add_participant(request: web.Request) -> web.Response:
    body = await read_json(request, "api/consultation-participant")
    view = await consultation.add_participant(hub_of(request), actor_of(request), request_id(request), body["username"])
    return json_response(view)


@routes.add(
    "DELETE",
    "/api/v1/consultations/{id}/participants/{username}",
    summary="Remove a participant: access to the request, its studies, attachments and live session ends at once",
    tag="consultations",
    roles="the requesting side or the consultant center",
    query=(("reason", "why (on the timeline and in the close reason)"),),
    responses=_RESPONSES,
)
async def remove_participant(request: web.Request) -> web.Response:
    rid, username = request_id(request), request.match_info["username"]
    reason = request.query.get("reason") or None
    view = await consultation.remove_participant(hub_of(request), actor_of(request), rid, username, reason)
    await evict(request.app, rid, username, f"participant-removed: removed from consultation {rid}")
    return json_response(view)
