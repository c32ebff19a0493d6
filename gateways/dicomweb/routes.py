"""The DICOMweb resources under ``/dicom-web``, declared once (aiohttp routes and OpenAPI). Handlers are thin:
scope and audit are the service layer's (``telenet.services.study_search``), authentication the API's
middleware (bearer token or console session; never a token in the URL)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from gateways.dicom.storage import FileStore
from gateways.dicomweb import qido, stow, wado
from gateways.dicomweb.media import BadRequest, negotiate_image
from gateways.dicomweb.render import FrameMissing, parse_options, render_file
from telenet.api.context import actor_of, hub_of
from telenet.api.spec import Query, Routes, integer
from telenet.config import Settings
from telenet.domain.access import Role
from telenet.domain.errors import NotFound
from telenet.services import study_search
from telenet.services.access import require_role
from telenet.services.study_search import StoredInstance

ROOT: Final = "/dicom-web"
TAG: Final = "dicomweb"
_S = "{study}"
_SE = "{series}"
_I = "{instance}"


@dataclass(frozen=True)
class DicomWebConfig:
    store: FileStore
    limits: stow.StowLimits

    @classmethod
    def from_settings(cls, settings: Settings) -> DicomWebConfig:
        return cls(
            FileStore(settings.resolved_dicom_storage_dir),
            stow.StowLimits(settings.dicomweb_max_instance_bytes, settings.dicomweb_max_request_bytes),
        )


CONFIG = web.AppKey("dicomweb", DicomWebConfig)
routes = Routes()
_SEARCH = "a DICOM JSON array of matches (empty when nothing matches or nothing is in scope)"
_QUERY = (
    ("PatientName", "PN pattern, * and ? wildcards, any component group"),
    ("PatientID", "exact or wildcard"),
    ("AccessionNumber", "exact or wildcard"),
    ("StudyDate", "YYYYMMDD or a range A-B, A-, -B"),
    ("ModalitiesInStudy", "one or more modalities, comma separated"),
    ("StudyInstanceUID", "one or more UIDs, comma separated"),
    ("includefield", "keywords or tags, or all"),
    ("limit", "at most this many (more is read as 1000)", {"type": "integer", "minimum": 0}),
    ("offset", "skip this many", {"type": "integer", "minimum": 0}),
    ("fuzzymatching", "accepted; matching stays exact"),
)


def _uid(request: web.Request, name: str) -> str:
    return qido.check_uid(request.match_info[name], name)


async def _search(
    request: web.Request, level: str, *, study: str | None = None, series: str | None = None
) -> web.Response:
    query, include, warnings = qido.parse_query(request, level, study_uid=study, series_uid=series)
    rows = await study_search.search(hub_of(request), actor_of(request), query)
    if not rows and (study or series):
        # an unknown (or invisible) parent study answers 404, like the resource it names
        await study_search.locate(hub_of(request), actor_of(request), query.study_uids[0], action="search")
    return qido.answer(request, rows, level, include, warnings)


@routes.add(
    "GET",
    f"{ROOT}/studies",
    summary="QIDO-RS: search studies",
    tag=TAG,
    query=_QUERY,
    responses={"200": _SEARCH, "400": "bad parameter", "406": "not acceptable"},
)
async def search_studies(request: web.Request) -> web.Response:
    return await _search(request, "study")


@routes.add(
    "GET",
    f"{ROOT}/series",
    summary="QIDO-RS: search series of all studies",
    tag=TAG,
    query=_QUERY,
    responses={"200": _SEARCH},
)
async def search_all_series(request: web.Request) -> web.Response:
    return await _search(request, "series")


@routes.add(
    "GET",
    f"{ROOT}/instances",
    summary="QIDO-RS: search instances of all studies",
    tag=TAG,
    query=_QUERY,
    responses={"200": _SEARCH},
)
async def search_all_instances(request: web.Request) -> web.Response:
    return await _search(request, "instance")


@routes.add(
    "GET",
    f"{ROOT}/studies/{_S}/series",
    summary="QIDO-RS: search a study's series",
    tag=TAG,
    query=_QUERY,
    responses={"200": _SEARCH, "404": "no such study in scope"},
)
async def search_series(request: web.Request) -> web.Response:
    return await _search(request, "series", study=_uid(request, "study"))


@routes.add(
    "GET",
    f"{ROOT}/studies/{_S}/instances",
    summary="QIDO-RS: search a study's instances",
    tag=TAG,
    query=_QUERY,
    responses={"200": _SEARCH, "404": "no such study in scope"},
)
async def search_study_instances(request: web.Request) -> web.Response:
    return await _search(request, "instance", study=_uid(request, "study"))


@routes.add(
    "GET",
    f"{ROOT}/studies/{_S}/series/{_SE}/instances",
    summary="QIDO-RS: search a series' instances",
    tag=TAG,
    query=_QUERY,
    responses={"200": _SEARCH, "404": "no such study in scope"},
)
async def search_series_instances(request: web.Request) -> web.Response:
    return await _search(request, "instance", study=_uid(request, "study"), series=_uid(request, "series"))


# --------------------------------------------------------------------------------------------------
# WADO-RS
# --------------------------------------------------------------------------------------------------


async def _locate(request: web.Request, action: str) -> list[StoredInstance]:
    series = _uid(request, "series") if "series" in request.match_info else None
    instance = _uid(request, "instance") if "instance" in request.match_info else None
    return await study_search.locate(
        hub_of(request), actor_of(request), _uid(request, "study"), series, instance, action=action
    )


_RETRIEVE = {
    "200": 'multipart/related; type="application/dicom"',
    "404": "no such study in scope",
    "406": "the stored transfer syntax is not acceptable",
}
_META = {"200": "application/dicom+json with BulkDataURI", "404": "no such study in scope", "406": "not acceptable"}


@routes.add("GET", f"{ROOT}/studies/{_S}", summary="WADO-RS: retrieve a study", tag=TAG, responses=_RETRIEVE)
async def retrieve_study(request: web.Request) -> web.StreamResponse:
    return await wado.retrieve(request, await _locate(request, "retrieve"))


@routes.add(
    "GET", f"{ROOT}/studies/{_S}/series/{_SE}", summary="WADO-RS: retrieve a series", tag=TAG, responses=_RETRIEVE
)
async def retrieve_series(request: web.Request) -> web.StreamResponse:
    return await wado.retrieve(request, await _locate(request, "retrieve"))


@routes.add(
    "GET",
    f"{ROOT}/studies/{_S}/series/{_SE}/instances/{_I}",
    summary="WADO-RS: retrieve an instance",
    tag=TAG,
    responses=_RETRIEVE,
)
async def retrieve_instance(request: web.Request) -> web.StreamResponse:
    return await wado.retrieve(request, await _locate(request, "retrieve"))


@routes.add("GET", f"{ROOT}/studies/{_S}/metadata", summary="WADO-RS: a study's metadata", tag=TAG, responses=_META)
async def study_metadata(request: web.Request) -> web.Response:
    return await wado.metadata(request, await _locate(request, "metadata"))


@routes.add(
    "GET", f"{ROOT}/studies/{_S}/series/{_SE}/metadata", summary="WADO-RS: a series' metadata", tag=TAG, responses=_META
)
async def series_metadata(request: web.Request) -> web.Response:
    return await wado.metadata(request, await _locate(request, "metadata"))


@routes.add(
    "GET",
    f"{ROOT}/studies/{_S}/series/{_SE}/instances/{_I}/metadata",
    summary="WADO-RS: an instance's metadata",
    tag=TAG,
    responses=_META,
)
async def instance_metadata(request: web.Request) -> web.Response:
    return await wado.metadata(request, await _locate(request, "metadata"))


@routes.add(
    "GET",
    f"{ROOT}/studies/{_S}/series/{_SE}/instances/{_I}/frames/{{frames}}",
    summary="WADO-RS: frames as application/octet-stream parts",
    tag=TAG,
    responses={
        "200": 'multipart/related; type="application/octet-stream"',
        "400": "bad frame list",
        "404": "no such frame",
        "406": "not acceptable",
    },
)
async def retrieve_frames(request: web.Request) -> web.StreamResponse:
    numbers = wado.parse_frame_list(request.match_info["frames"])
    (item,) = await _locate(request, "frames")
    return await wado.frames(request, item, numbers)


@routes.add(
    "GET",
    f"{ROOT}/studies/{_S}/series/{_SE}/instances/{_I}/bulkdata/{{tag}}",
    summary="WADO-RS: a bulk data value named by a BulkDataURI",
    tag=TAG,
    responses={"200": 'multipart/related; type="application/octet-stream"', "404": "no such value"},
)
async def retrieve_bulkdata(request: web.Request) -> web.StreamResponse:
    (item,) = await _locate(request, "bulkdata")
    return await wado.bulkdata(request, item, request.match_info["tag"])


# --------------------------------------------------------------------------------------------------
# Rendered and thumbnail
# --------------------------------------------------------------------------------------------------


async def _rendered(request: web.Request, *, thumbnail: bool, representative: bool = False) -> web.Response:
    media = negotiate_image(request.headers.get("Accept"))
    options = parse_options(dict(request.query), media, thumbnail=thumbnail)
    frame = 1
    if "frames" in request.match_info:
        numbers = wado.parse_frame_list(request.match_info["frames"])
        if len(numbers) != 1:
            raise BadRequest("a rendered frame is one frame number", code="bad-frame-list")
        frame = numbers[0]
    items = await _locate(request, "thumbnail" if thumbnail else "rendered")
    item = items[len(items) // 2] if representative else items[0]
    try:
        body = await asyncio.to_thread(render_file, item.path, item.sop_class_uid, frame, options)
    except FrameMissing as exc:
        raise NotFound(str(exc), code="no-frame") from None
    except (ValueError, NotImplementedError, RuntimeError) as exc:  # no pixel decoder for the stored syntax
        raise NotFound(f"the frame cannot be rendered: {exc}", code="not-renderable") from None
    return web.Response(body=body, content_type=media)


_IMAGE = {"200": "image/jpeg or image/png", "404": "no such image in scope", "406": "not acceptable"}
_RENDER_Q: tuple[Query, ...] = (
    ("window", "center,width[,linear|linear-exact|sigmoid]"),
    ("viewport", "vw,vh (each 1..4096)"),
    ("quality", "1..100", integer(1, 100)),
)
_INSTANCE = f"{ROOT}/studies/{_S}/series/{_SE}/instances/{_I}"


@routes.add(
    "GET",
    f"{_INSTANCE}/rendered",
    summary="WADO-RS: an instance rendered (first frame; ECG sheet)",
    tag=TAG,
    query=_RENDER_Q,
    responses=_IMAGE,
)
async def instance_rendered(request: web.Request) -> web.Response:
    return await _rendered(request, thumbnail=False)


@routes.add(
    "GET",
    f"{_INSTANCE}/thumbnail",
    summary="WADO-RS: an instance's thumbnail",
    tag=TAG,
    query=_RENDER_Q,
    responses=_IMAGE,
)
async def instance_thumbnail(request: web.Request) -> web.Response:
    return await _rendered(request, thumbnail=True)


@routes.add(
    "GET",
    f"{_INSTANCE}/frames/{{frames}}/rendered",
    summary="WADO-RS: one frame rendered",
    tag=TAG,
    query=_RENDER_Q,
    responses=_IMAGE,
)
async def frame_rendered(request: web.Request) -> web.Response:
    return await _rendered(request, thumbnail=False)


@routes.add(
    "GET",
    f"{_INSTANCE}/frames/{{frames}}/thumbnail",
    summary="WADO-RS: one frame's thumbnail",
    tag=TAG,
    query=_RENDER_Q,
    responses=_IMAGE,
)
async def frame_thumbnail(request: web.Request) -> web.Response:
    return await _rendered(request, thumbnail=True)


@routes.add(
    "GET",
    f"{ROOT}/studies/{_S}/thumbnail",
    summary="WADO-RS: a study's thumbnail (a middle instance)",
    tag=TAG,
    query=_RENDER_Q,
    responses=_IMAGE,
)
async def study_thumbnail(request: web.Request) -> web.Response:
    return await _rendered(request, thumbnail=True, representative=True)


@routes.add(
    "GET",
    f"{ROOT}/studies/{_S}/series/{_SE}/thumbnail",
    summary="WADO-RS: a series' thumbnail",
    tag=TAG,
    query=_RENDER_Q,
    responses=_IMAGE,
)
async def series_thumbnail(request: web.Request) -> web.Response:
    return await _rendered(request, thumbnail=True, representative=True)


# --------------------------------------------------------------------------------------------------
# STOW-RS
# --------------------------------------------------------------------------------------------------

_STOW = {
    "200": "all stored",
    "202": "some stored, some failed (FailedSOPSequence)",
    "400": "malformed multipart",
    "403": "role may not store",
    "409": "none stored",
    "413": "instance or body too large",
    "415": 'not multipart/related; type="application/dicom"',
}


async def _stow(request: web.Request, study: str | None) -> web.Response:
    actor = actor_of(request)
    require_role(actor, Role.REQUESTER, Role.INTEGRATION, action="store DICOM instances")
    config = request.app[CONFIG]
    return await stow.stow(request, hub_of(request), actor, config.store, config.limits, study)


@routes.add(
    "POST",
    f"{ROOT}/studies",
    summary="STOW-RS: store instances (the C-STORE path)",
    tag=TAG,
    roles="requester, integration",
    responses=_STOW,
)
async def store_instances(request: web.Request) -> web.Response:
    return await _stow(request, None)


@routes.add(
    "POST",
    f"{ROOT}/studies/{_S}",
    summary="STOW-RS: store instances of one study",
    tag=TAG,
    roles="requester, integration",
    responses=_STOW,
)
async def store_study_instances(request: web.Request) -> web.Response:
    return await _stow(request, _uid(request, "study"))
