"""The surface table's rows for DICOMweb (``/dicom-web/...``), attachments and the browser console (pages,
static files, the OHIF viewer), concatenated at the end of ``surface_table.ROUTES``. Read the docstring of
``surface_table`` first: the rows here follow its rules.

DICOMweb answers a study outside the caller's scope with 404 (its existence is not told), so "other" is 404
where the REST API says 403. A study read leaves ``dicomweb.<resource>`` naming the study's source institution
(the side's township); a search leaves ``dicomweb.search.<level>`` at the caller's institution (the search
ranges over the caller's scope), and a search below one study a ``dicomweb.search`` row per matched study.

Console pages send the role's session cookie (``credential="session"``): a logged-out visitor is sent to the
login page (303), and a page the role may not see renders the error page with the API's status.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from tests.integration.surface_table import Read, Row, Side, Target, expect, public

# --- DICOMweb ----------------------------------------------------------------------------------------------

# Admins get aggregates: without a stated reason (break-glass) no study is theirs to see, so 404 like any other.
_STUDY_READ = {role: (200, 404) for role in ("requester", "reader", "coordinator", "integration")} | {"admin": 404}
_BOUNDARY = "surface-table-boundary"


def _stow_body(study_uid: str | None) -> tuple[bytes, dict[str, str]]:
    """One fresh CT instance (of ``study_uid`` when given) as a STOW-RS multipart body and its headers."""
    from pydicom.filebase import DicomBytesIO

    from tests.dicom_fixtures import instance

    ds = instance("CT_small.dcm", study_uid=study_uid)
    buffer = DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    part = buffer.getvalue()
    body = io.BytesIO()
    body.write(f"--{_BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode())
    body.write(part)
    body.write(f"\r\n--{_BOUNDARY}--\r\n".encode())
    content_type = f'multipart/related; type="application/dicom"; boundary={_BOUNDARY}'
    return body.getvalue(), {"Content-Type": content_type, "Accept": "application/dicom+json"}


def _stow(study: bool) -> Callable[[Side], Target]:
    def build(side: Side) -> Target:
        data, headers = _stow_body(side.image_study_uid if study else None)
        return Target(
            f"/dicom-web/studies/{side.image_study_uid}" if study else "/dicom-web/studies", None, data, headers
        )

    return build


def _study(suffix: str = "", *, image: bool = False, accept: str | None = None) -> Callable[[Side], Target]:
    def build(side: Side) -> Target:
        study = side.image_study_uid if image else side.study_uid
        return Target(f"/dicom-web/studies/{study}{suffix}", headers={"Accept": accept} if accept else None)

    return build


def _series(suffix: str = "", **kwargs: Any) -> Callable[[Side], Target]:
    def build(side: Side) -> Target:
        return _study(f"/series/{side.image_series_uid}{suffix}", image=True, **kwargs)(side)

    return build


def _instance(suffix: str = "", **kwargs: Any) -> Callable[[Side], Target]:
    def build(side: Side) -> Target:
        return _series(f"/instances/{side.image_uid}{suffix}", **kwargs)(side)

    return build


def _search(level: str) -> Callable[[Side], Target]:
    return lambda side: Target(f"/dicom-web/{level}?StudyInstanceUID={side.image_study_uid}")


_JPEG = "image/jpeg"
_ALL = "*/*"


def _read(path: str, target: Callable[[Side], Target], action: str, note: str = "") -> Row:
    return Row(
        "GET", path, expect(**_STUDY_READ), target=target, audit=Read(action, "dicom_study", "institution"), note=note
    )


DICOMWEB: list[Row] = [
    # QIDO-RS over the caller's scope: the other side's study is simply not among the matches.
    Row(
        "GET",
        "/dicom-web/studies",
        expect(**{r: 200 for r in _STUDY_READ}),
        target=_search("studies"),
        audit=Read("dicomweb.search.study", "dicom_study", "actor"),
    ),
    Row(
        "GET",
        "/dicom-web/series",
        expect(**{r: 200 for r in _STUDY_READ}),
        target=_search("series"),
        audit=Read("dicomweb.search.series", "dicom_study", "actor"),
    ),
    Row(
        "GET",
        "/dicom-web/instances",
        expect(**{r: 200 for r in _STUDY_READ}),
        target=_search("instances"),
        audit=Read("dicomweb.search.instance", "dicom_study", "actor"),
    ),
    # QIDO-RS below one study: an invisible study is 404 like the resource it names.
    _read("/dicom-web/studies/{study}/series", _study("/series", image=True), "dicomweb.search"),
    _read("/dicom-web/studies/{study}/instances", _study("/instances", image=True), "dicomweb.search"),
    _read("/dicom-web/studies/{study}/series/{series}/instances", _series("/instances"), "dicomweb.search"),
    # WADO-RS
    _read("/dicom-web/studies/{study}", _study(accept=_ALL), "dicomweb.retrieve", "the ECG study"),
    _read("/dicom-web/studies/{study}/series/{series}", _series(accept=_ALL), "dicomweb.retrieve"),
    _read(
        "/dicom-web/studies/{study}/series/{series}/instances/{instance}", _instance(accept=_ALL), "dicomweb.retrieve"
    ),
    _read("/dicom-web/studies/{study}/metadata", _study("/metadata"), "dicomweb.metadata", "the ECG study"),
    _read("/dicom-web/studies/{study}/series/{series}/metadata", _series("/metadata"), "dicomweb.metadata"),
    _read(
        "/dicom-web/studies/{study}/series/{series}/instances/{instance}/metadata",
        _instance("/metadata"),
        "dicomweb.metadata",
    ),
    _read(
        "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
        _instance("/frames/1", accept=_ALL),
        "dicomweb.frames",
    ),
    _read(
        "/dicom-web/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag}",
        _instance("/bulkdata/7FE00010", accept=_ALL),
        "dicomweb.bulkdata",
        "the pixel data of the uncompressed CT",
    ),
    # Rendered and thumbnails
    _read(
        "/dicom-web/studies/{study}/series/{series}/instances/{instance}/rendered",
        _instance("/rendered", accept=_JPEG),
        "dicomweb.rendered",
    ),
    _read(
        "/dicom-web/studies/{study}/series/{series}/instances/{instance}/thumbnail",
        _instance("/thumbnail", accept=_JPEG),
        "dicomweb.thumbnail",
    ),
    _read(
        "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
        _instance("/frames/1/rendered", accept=_JPEG),
        "dicomweb.rendered",
    ),
    _read(
        "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/thumbnail",
        _instance("/frames/1/thumbnail", accept=_JPEG),
        "dicomweb.thumbnail",
    ),
    _read("/dicom-web/studies/{study}/thumbnail", _study("/thumbnail", image=True, accept=_JPEG), "dicomweb.thumbnail"),
    _read(
        "/dicom-web/studies/{study}/series/{series}/thumbnail",
        _series("/thumbnail", accept=_JPEG),
        "dicomweb.thumbnail",
    ),
    # STOW-RS: clinics and HIS accounts store; a new study is nobody's order yet (it waits in reconciliation),
    # a new instance of the other side's study is refused (409, the study is not the caller's).
    Row(
        "POST",
        "/dicom-web/studies",
        expect(requester=200, integration=200),
        target=_stow(study=False),
        note="a fresh CT of no order: harmless to repeat",
    ),
    Row(
        "POST",
        "/dicom-web/studies/{study}",
        expect(requester=(200, 409), integration=(200, 409)),
        target=_stow(study=True),
        note="a fresh instance of the side's CT study",
    ),
]

# --- attachments -------------------------------------------------------------------------------------------

#: The smallest file the type check accepts as a PNG (the signature, then anything).
PNG = b"\x89PNG\r\n\x1a\n" + b"surface table"

_SEES_REQUEST = {
    "requester": (200, 403),
    "reader": (200, 403),
    "coordinator": (200, 403),
    "integration": (200, 403),
}

ATTACHMENTS: list[Row] = [
    Row(
        "POST",
        "/api/v1/requests/{id}/attachments",
        expect(requester=(201, 403), coordinator=(201, 403), integration=(201, 403)),
        target=lambda side: Target(
            f"/api/v1/requests/{side.request_id}/attachments",
            data=PNG,
            headers={"Content-Type": "image/png", "X-Filename": "surface.png"},
        ),
        note="the requesting side (its clinic, its HIS, the coordinators above it) attaches, to the final ECG",
    ),
    Row(
        "GET",
        "/api/v1/requests/{id}/attachments",
        expect(**_SEES_REQUEST),
        target=lambda side: Target(f"/api/v1/requests/{side.consultation_id}/attachments"),
        audit=Read("attachment.list", "request", "institution"),
    ),
    Row(
        "GET",
        "/api/v1/attachments/{id}",
        expect(**_SEES_REQUEST),
        target=lambda side: Target(f"/api/v1/attachments/{side.attachment_id}"),
        audit=Read("attachment.read", "attachment", "institution"),
    ),
]

# --- the console -------------------------------------------------------------------------------------------


def page(default: int = 403, **roles: int | tuple[int, int]) -> Any:
    """A console page: logged-out visitors are sent to the login page."""
    return expect(default, anonymous=303, **roles)


_ROLES = ("requester", "reader", "coordinator", "admin", "integration")


def _console(method: str, path: str, cells: Any, **kwargs: Any) -> Row:
    return Row(method, path, cells, credential="session", **kwargs)


CONSOLE: list[Row] = [
    _console("GET", "/", public(303), note="to the role's home page, or to the login page"),
    _console("GET", "/login", expect(303, anonymous=200), note="a logged-in visitor goes home"),
    _console(
        "POST",
        "/login",
        expect(303, anonymous=401, **{r: (303, 401) for r in _ROLES}),
        note="the form with the pre-login CSRF cookie: own = the password, other = a wrong one; anonymous is nobody",
    ),
    _console("POST", "/logout", public(303), fresh_token=True, note="each firing logs in through the form first"),
    _console(
        "POST",
        "/lang",
        expect(303, anonymous=403),
        target=lambda side: Target("/lang", {"lang": "zh", "next": "/requests"}),
        note="with the session's CSRF token; a visitor without a session has none",
    ),
    _console("GET", "/requests", page(200), audit=Read("request.list", "request", "actor")),
    _console("GET", "/requests/new", page(requester=200)),
    _console(
        "GET",
        "/requests/{id}",
        page(**_SEES_REQUEST),
        target=lambda side: Target(f"/requests/{side.request_id}"),
        audit=Read("request.read", "request", "institution"),
    ),
    _console(
        "GET",
        "/requests/{id}/print",
        page(**_SEES_REQUEST),
        target=lambda side: Target(f"/requests/{side.request_id}/print"),
        audit=Read("request.read", "request", "institution"),
    ),
    _console(
        "GET",
        "/centers/{code}/worklist",
        page(reader=(200, 403), coordinator=(200, 403)),
        target=lambda side: Target(f"/centers/{side.center}/worklist"),
        audit=Read("worklist.read", "center", "center"),
    ),
    _console("GET", "/upload", page(requester=200)),
    _console(
        "GET",
        "/centers/{code}/board",
        page(coordinator=(200, 403)),
        target=lambda side: Target(f"/centers/{side.center}/board"),
        audit=Read("worklist.read", "center", "center"),
    ),
    _console("GET", "/admin/registry", page(admin=200)),
    _console("GET", "/admin/assessment", page(admin=200)),
    _console(
        "GET",
        "/admin/assessment/{chart}.csv",
        page(admin=200),
        target=lambda side: Target("/admin/assessment/kind.csv"),
    ),
    _console("GET", "/admin/settlements", page(admin=200)),
    _console(
        "GET",
        "/admin/audit",
        page(admin=(200, 403)),
        target=lambda side: Target(f"/admin/audit?institution={side.institution}"),
        audit=Read("audit.read", "audit", "institution"),
    ),
    Row("GET", "/static", public(200), prefix=True, target=lambda side: Target("/static/console.css")),
    Row("GET", "/ohif/app-config.js", public(200)),
    _console("GET", "/ohif", page(200), note="the viewer's page (a stand-in index.html) for any logged-in role"),
    _console(
        "GET",
        "/ohif/{tail}",
        page(200),
        target=lambda side: Target(f"/ohif/viewer?StudyInstanceUIDs={side.image_study_uid}"),
        note="the SPA's own routes serve its index.html; its files are public (see test_console_pages)",
    ),
]

WEB_ROUTES: list[Row] = [*DICOMWEB, *ATTACHMENTS, *CONSOLE]
