"""Sessions and accounts: logout, password changes, disabling, enabling and unlocking accounts."""

from __future__ import annotations

from aiohttp import web

from telenet.api.context import actor_of, hub_of, json_response, read_json
from telenet.api.middleware import bearer_token
from telenet.api.spec import Routes
from telenet.domain.errors import Invalid
from telenet.services import login

routes = Routes()


@routes.add(
    "POST",
    "/api/v1/auth/logout",
    summary="End the presented bearer token, in every hub process",
    tag="auth",
    responses={"204": "the token is revoked"},
)
async def logout(request: web.Request) -> web.Response:
    token = bearer_token(request)
    if token is None:  # authenticated some other way (a console session ends through the console's logout)
        raise Invalid("logout ends a bearer token: send it in Authorization", code="missing-token")
    await login.logout(hub_of(request), actor_of(request), token)
    return web.Response(status=204)


@routes.add(
    "POST",
    "/api/v1/auth/password",
    summary="Change your own password; every token and session of your account ends",
    tag="auth",
    body="api/password-change",
    responses={"200": "changed; log in again", "401": "wrong current password", "429": "too many attempts"},
)
async def change_password(request: web.Request) -> web.Response:
    body = await read_json(request, "api/password-change")
    result = await login.change_own_password(
        hub_of(request), actor_of(request), body["current_password"], body["new_password"]
    )
    return json_response(result)


@routes.add(
    "POST",
    "/api/v1/users/{username}/disable",
    summary="Disable an account of your subtree; its tokens and sessions end at once",
    tag="auth",
    roles="admin",
    responses={"200": "disabled", "404": "unknown user"},
)
async def disable_user(request: web.Request) -> web.Response:
    username = request.match_info["username"]
    return json_response(await login.set_active(hub_of(request), actor_of(request), username, False))


@routes.add(
    "POST",
    "/api/v1/users/{username}/enable",
    summary="Enable a disabled account of your subtree",
    tag="auth",
    roles="admin",
    responses={"200": "enabled", "404": "unknown user"},
)
async def enable_user(request: web.Request) -> web.Response:
    username = request.match_info["username"]
    return json_response(await login.set_active(hub_of(request), actor_of(request), username, True))


@routes.add(
    "POST",
    "/api/v1/users/{username}/unlock",
    summary="Lift the lockout left by repeated failed logins",
    tag="auth",
    roles="admin",
    responses={"200": "unlocked", "404": "unknown user"},
)
async def unlock_user(request: web.Request) -> web.Response:
    username = request.match_info["username"]
    return json_response(await login.unlock(hub_of(request), actor_of(request), username))


@routes.add(
    "POST",
    "/api/v1/users/{username}/password",
    summary="Set the password of an account of your subtree; its tokens and sessions end",
    tag="auth",
    roles="admin",
    body="api/password-reset",
    responses={"200": "set", "404": "unknown user"},
)
async def reset_password(request: web.Request) -> web.Response:
    body = await read_json(request, "api/password-reset")
    username = request.match_info["username"]
    return json_response(await login.reset_password(hub_of(request), actor_of(request), username, body["password"]))
