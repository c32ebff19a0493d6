"""Admins change the registry (institutions, centers, agreements, accounts) and read its history: every change
is a new version (scope, validation and audit are in ``services.registry_admin``)."""

from __future__ import annotations

from aiohttp import web

from telenet.api.context import actor_of, hub_of, json_response, read_json
from telenet.api.spec import Routes
from telenet.services import registry_admin
from telenet.services.registry_admin import KINDS

routes = Routes()

_CHANGED = {
    "200": "the version written (revision null: nothing changed, no new version)",
    "403": "not an admin of the record's subtree",
    "404": "no such record",
    "409": "a change is scheduled later than effective_from",
    "422": "invalid body (problem JSON lists every error)",
}
_ADMINS = "admins of the record's institution or above"


@routes.add(
    "PATCH",
    "/api/v1/institutions/{code}",
    summary="Change an institution (a new version; effective_from schedules it)",
    tag="registry",
    body="api/institution-change",
    roles=_ADMINS,
    responses=_CHANGED,
)
async def change_institution(request: web.Request) -> web.Response:
    body = await read_json(request, "api/institution-change")
    return json_response(
        await registry_admin.change_institution(hub_of(request), actor_of(request), request.match_info["code"], body)
    )


@routes.add(
    "PATCH",
    "/api/v1/centers/{code}",
    summary="Change a center: opening hours, SLA, capacity, modalities (a new version)",
    tag="registry",
    body="api/center-change",
    roles="admins of the center's institution or above",
    responses=_CHANGED,
)
async def change_center(request: web.Request) -> web.Response:
    body = await read_json(request, "api/center-change")
    return json_response(
        await registry_admin.change_center(hub_of(request), actor_of(request), request.match_info["code"], body)
    )


@routes.add(
    "POST",
    "/api/v1/networks/{code}/agreements",
    summary="A new agreement between the network's lead and a member",
    tag="registry",
    body="api/agreement-create",
    roles="admins of the network lead's institution or above",
    responses={
        "201": "the agreement's first version",
        "403": "not an admin of the lead's subtree",
        "404": "no such network",
        "409": "the member has an agreement already: PATCH it",
        "422": "invalid body, or the institution is not a member",
    },
)
async def create_agreement(request: web.Request) -> web.Response:
    body = await read_json(request, "api/agreement-create")
    view = await registry_admin.create_agreement(hub_of(request), actor_of(request), request.match_info["code"], body)
    return json_response(view, status=201)


@routes.add(
    "PATCH",
    "/api/v1/networks/{code}/agreements/{member}",
    summary="Change an agreement: dates, services, share (a new version; it is never deleted)",
    tag="registry",
    body="api/agreement-change",
    roles="admins of the network lead's institution or above",
    responses=_CHANGED,
)
async def change_agreement(request: web.Request) -> web.Response:
    body = await read_json(request, "api/agreement-change")
    return json_response(
        await registry_admin.change_agreement(
            hub_of(request), actor_of(request), request.match_info["code"], request.match_info["member"], body
        )
    )


@routes.add(
    "PATCH",
    "/api/v1/users/{username}",
    summary="Change an account: role, centers, name, title, active (a new version)",
    tag="registry",
    body="api/account-change",
    roles="admins of the account's institution or above",
    responses=_CHANGED,
)
async def change_account(request: web.Request) -> web.Response:
    body = await read_json(request, "api/account-change")
    return json_response(
        await registry_admin.change_account(hub_of(request), actor_of(request), request.match_info["username"], body)
    )


@routes.add(
    "GET",
    "/api/v1/registry/history",
    summary="Every version of one registry record, with its validity period",
    tag="registry",
    roles=_ADMINS,
    query=(
        ("kind", "which record", {"type": "string", "enum": list(KINDS), "x-required": True}),
        ("key", "code, network/member or username", {"type": "string", "minLength": 1, "x-required": True}),
    ),
)
async def registry_history(request: web.Request) -> web.Response:
    return json_response(
        await registry_admin.history(
            hub_of(request), actor_of(request), request.query.get("kind", ""), request.query.get("key", "")
        )
    )
