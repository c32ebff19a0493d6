"""Attachments of requests over REST: the file is the body (its own Content-Type, the name in X-Filename,
URL-encoded), so a browser sends it with one fetch and no multipart parsing."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, unquote

from aiohttp import web

from telenet.api.bodies import path_id
from telenet.api.context import actor_of, hub_of, json_response
from telenet.api.request_routes import request_id
from telenet.api.spec import Routes
from telenet.domain.errors import Invalid
from telenet.services import attachments

routes = Routes()
DIRECTORY = web.AppKey("attachment_dir", Path)


@routes.add(
    "POST",
    "/api/v1/requests/{id}/attachments",
    summary="Attach a PDF, JPEG, PNG or DICOM file (body: the file; X-Filename: its name, URL-encoded)",
    tag="consultations",
    roles="requesting institution; for a consultation also its consultant center and invited participants",
    responses={"201": "attached", "403": "not the requesting side", "422": "empty, too large or not that type"},
)
async def add_attachment(request: web.Request) -> web.Response:
    content_type = request.content_type
    data = await request.read()
    name = unquote(request.headers.get("X-Filename", ""))
    if not name:
        raise Invalid("the file name goes in the X-Filename header", code="bad-filename")
    view = await attachments.add(
        hub_of(request), actor_of(request), request_id(request), name, content_type, data, request.app[DIRECTORY]
    )
    return json_response(view, status=201, headers={"Location": view["href"]})


@routes.add(
    "GET",
    "/api/v1/requests/{id}/attachments",
    summary="The attachments of a request",
    tag="consultations",
    responses={"200": "attachments", "403": "outside scope", "404": "no such request"},
)
async def list_attachments(request: web.Request) -> web.Response:
    items = await attachments.list_for(hub_of(request), actor_of(request), request_id(request))
    return json_response({"items": items})


@routes.add(
    "GET",
    "/api/v1/attachments/{id}",
    summary="Open an attachment (audited)",
    tag="consultations",
    responses={"200": "the file", "403": "outside scope", "404": "no such attachment"},
)
async def open_attachment(request: web.Request) -> web.StreamResponse:
    attachment_id = path_id(request, what="attachment id")
    path, view = await attachments.open_file(hub_of(request), actor_of(request), attachment_id, request.app[DIRECTORY])
    disposition = f"inline; filename*=UTF-8''{quote(view['filename'])}"
    return web.FileResponse(
        path,
        headers={
            "Content-Type": view["content_type"],
            "Content-Disposition": disposition,
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, no-store",
        },
    )
