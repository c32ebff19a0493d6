"""DICOM studies, ECG views, reconciliation and the forwarding queue over REST (scope and audit are in the
service layer)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from telenet.api.bodies import path_id
from telenet.api.context import actor_of, hub_of, read_json
from telenet.api.registry_routes import query_int
from telenet.api.request_routes import request_id
from telenet.api.spec import Routes, integer, one_of
from telenet.domain.errors import Invalid, NotFound
from telenet.services import forwarding, study_views

routes = Routes()


@routes.add(
    "GET",
    "/api/v1/requests/{id}/studies",
    summary="The DICOM studies of a request, with series and the ECG measurement suggestion",
    tag="dicom",
    responses={"200": "studies", "403": "outside scope", "404": "no such request"},
)
async def request_studies(request: web.Request) -> web.Response:
    return web.json_response(await study_views.request_studies(hub_of(request), actor_of(request), request_id(request)))


def _sop_uid(request: web.Request) -> str:
    uid = request.match_info["uid"]
    if not uid or len(uid) > 64 or not all(c.isdigit() or c == "." for c in uid):
        raise Invalid("not a SOP Instance UID", code="bad-parameter")
    return uid


#: Renders an ECG's SVG from its stored DICOM file when it is not there yet: (instance path, svg path) -> bool.
class EcgRenderer(Protocol):
    def __call__(self, instance_path: str, svg_path: str) -> bool: ...


ECG_RENDERER = web.AppKey("ecg_renderer", EcgRenderer)


def _read(path: str | None) -> bytes:
    if not path or not Path(path).is_file():
        raise NotFound("the rendered ECG is not available (the waveform could not be read)")
    return Path(path).read_bytes()


@routes.add(
    "GET",
    "/api/v1/ecg/{uid}.svg",
    summary="A 12-lead ECG on the standard grid (25 mm/s, 10 mm/mV) as SVG",
    tag="dicom",
    responses={"200": "image/svg+xml", "403": "outside scope", "404": "no such ECG"},
)
async def ecg_svg(request: web.Request) -> web.Response:
    view = await study_views.ecg_files(hub_of(request), actor_of(request), _sop_uid(request))
    render = request.app.get(ECG_RENDERER)
    if render is not None and view["svg_path"] and view.get("instance_path"):
        # Rendered on its first view, on a worker thread (not during ingest); kept for the next ones.
        await asyncio.to_thread(render, view["instance_path"], view["svg_path"])
    body = await asyncio.to_thread(_read, view["svg_path"])
    return web.Response(body=body, content_type="image/svg+xml", charset="utf-8")


@routes.add(
    "GET",
    "/api/v1/ecg/{uid}.json",
    summary="An ECG's downsampled leads (mV) for viewers, with the measured heart rate as a suggestion",
    tag="dicom",
    responses={"200": "leads and suggestion", "403": "outside scope", "404": "no such ECG"},
)
async def ecg_json(request: web.Request) -> web.Response:
    view = await study_views.ecg_files(hub_of(request), actor_of(request), _sop_uid(request))
    waveform: dict[str, Any] = json.loads(await asyncio.to_thread(_read, view["json_path"]))
    body = {
        "sop_instance_uid": view["sop_instance_uid"],
        "request_id": view["request_id"],
        "suggestion": view["suggestion"],
        **waveform,
    }
    return web.json_response(body)


@routes.add(
    "GET",
    "/api/v1/reconciliation",
    summary="Studies that arrived without a matching order",
    tag="dicom",
    roles="coordinator, admin",
    query=(("limit", "at most this many (max 1000)", integer(1, 1000)),),
)
async def reconciliation(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", 100, low=1, high=1000)
    return web.json_response(await study_views.reconciliation_list(hub_of(request), actor_of(request), limit=limit))


@routes.add(
    "POST",
    "/api/v1/reconciliation/{study}/link",
    summary="Link an unmatched study (by StudyInstanceUID) to its request",
    tag="dicom",
    body="api/reconciliation-link",
    roles="coordinator, admin",
    responses={
        "200": "the linked study",
        "404": "no such study or request",
        "409": "already linked, or the study's patient differs from the request's (confirm with a reason)",
    },
)
async def link(request: web.Request) -> web.Response:
    body = await read_json(request, "api/reconciliation-link")
    view = await study_views.link_study(
        hub_of(request),
        actor_of(request),
        request.match_info["study"],
        request_id=body.get("request_id"),
        accession_number=body.get("accession_number"),
        confirm_reason=body.get("confirm_reason"),
    )
    return web.json_response(view)


@routes.add(
    "GET",
    "/api/v1/forwarding",
    summary="The forwarding queue to center PACS nodes and current destination outages",
    tag="dicom",
    roles="coordinator, admin",
    query=(
        ("state", "pending|sending|done|dead", one_of(*forwarding.STATES)),
        ("limit", "at most this many (max 1000)", integer(1, 1000)),
    ),
)
async def forwarding_queue(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", 100, low=1, high=1000)
    return web.json_response(
        await forwarding.list_jobs(hub_of(request), actor_of(request), state=request.query.get("state"), limit=limit)
    )


@routes.add(
    "POST",
    "/api/v1/forwarding/{id}/replay",
    summary="Send a dead-lettered forward again (due now, a fresh attempt budget)",
    tag="dicom",
    roles="coordinators of the destination center, admins of its subtree",
    responses={
        "200": "queued again",
        "403": "not a coordinator of the destination center (nor an admin above it)",
        "404": "no such job",
        "409": "the job is not dead-lettered, or the study is queued for that center already",
    },
)
async def replay_forward(request: web.Request) -> web.Response:
    job_id = path_id(request, what="forwarding job id")
    return web.json_response(await forwarding.replay(hub_of(request), actor_of(request), job_id))
