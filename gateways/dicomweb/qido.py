"""QIDO-RS (PS3.18 10.6): query parameters to a service search, matches to DICOM JSON.

Matching keys by keyword or tag: PatientName (``*``/``?``, any component group, case-insensitive),
PatientID, AccessionNumber, StudyDate (``A``, ``A-B``, ``A-``, ``-B``), ModalitiesInStudy, StudyInstanceUID
(lists), StudyDescription, Modality, SeriesInstanceUID, SOPClassUID, SOPInstanceUID; ``includefield``
(keywords, tags, ``all``), ``limit``/``offset``, ``fuzzymatching`` (accepted; matching stays exact). Other
standard attributes are accepted and ignored with a ``Warning`` header; a name that is no attribute is 400.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Final

from aiohttp import web

from gateways.dicomweb.dicomjson import ATTRIBUTES, keyword_of, qido_object
from gateways.dicomweb.media import BadRequest, negotiate_json
from telenet.services.study_search import DEFAULT_LIMIT, MAX_LIMIT, SearchQuery

_UID: Final = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_CONTROL: Final = frozenset({"includefield", "limit", "offset", "fuzzymatching"})
_MATCHED: Final = frozenset(
    {
        "PatientName",
        "PatientID",
        "AccessionNumber",
        "StudyDescription",
        "StudyDate",
        "ModalitiesInStudy",
        "StudyInstanceUID",
        "Modality",
        "SeriesInstanceUID",
        "SOPClassUID",
        "SOPInstanceUID",
    }
)


def check_uid(value: str, name: str = "UID") -> str:
    if not value or len(value) > 64 or not _UID.match(value):
        raise BadRequest(f"{name} {value[:70]!r} is not a valid UID", code="bad-uid")
    return value


def _uid_list(values: list[str], name: str) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        for item in re.split(r"[,\\]", value):
            if item.strip() and item.strip() != "*":
                out.append(check_uid(item.strip(), name))
    return tuple(dict.fromkeys(out))


def _date(text: str) -> str:
    try:
        datetime.strptime(text, "%Y%m%d")
    except ValueError:
        raise BadRequest(f"{text!r} is not a DICOM date (YYYYMMDD)", code="bad-date") from None
    return text


def date_range(value: str) -> tuple[str | None, str | None]:
    text = value.strip().replace("-", "-")
    if "-" not in text:
        return _date(text), _date(text)
    low, _, high = text.partition("-")
    return (_date(low) if low else None), (_date(high) if high else None)


def _int(request: web.Request, name: str, default: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer", code="bad-parameter") from None
    if value < 0:
        raise BadRequest(f"{name} must not be negative", code="bad-parameter")
    return min(value, high)


def parse_query(
    request: web.Request, level: str, *, study_uid: str | None = None, series_uid: str | None = None
) -> tuple[SearchQuery, set[str] | None, list[str]]:
    """The search, the attributes to include (None: all) and the warnings about ignored keys."""
    values: dict[str, list[str]] = {}
    include: set[str] | None = set()
    warnings: list[str] = []
    for name, value in request.query.items():
        if name.lower() in _CONTROL:
            if name.lower() == "includefield":
                for item in value.split(","):
                    item = item.strip()
                    if not item:
                        continue
                    if item.lower() == "all":
                        include = None
                        continue
                    keyword = keyword_of(item)
                    if keyword is None:
                        raise BadRequest(f"includefield {item!r} is not a DICOM attribute", code="bad-parameter")
                    if include is not None:
                        include.add(keyword)
            continue
        keyword = keyword_of(name)
        if keyword is None:
            raise BadRequest(f"{name!r} is not a DICOM attribute or QIDO-RS parameter", code="bad-parameter")
        if keyword not in _MATCHED:
            warnings.append(f"{keyword} is not a matching key here and was ignored")
            continue
        values.setdefault(keyword, []).append(value)

    def one(keyword: str) -> str | None:
        items = [v for v in values.get(keyword, []) if v.strip()]
        return items[0].strip() if items else None

    study_uids = (
        (check_uid(study_uid, "StudyInstanceUID"),)
        if study_uid
        else _uid_list(values.get("StudyInstanceUID", []), "StudyInstanceUID")
    )
    series_uids = (
        (check_uid(series_uid, "SeriesInstanceUID"),)
        if series_uid
        else _uid_list(values.get("SeriesInstanceUID", []), "SeriesInstanceUID")
    )
    low, high = date_range(one("StudyDate") or "") if one("StudyDate") else (None, None)
    modalities = tuple(
        m.strip() for v in values.get("ModalitiesInStudy", []) for m in re.split(r"[,\\]", v) if m.strip()
    )
    query = SearchQuery(
        level=level,
        study_uids=study_uids,
        series_uids=series_uids,
        sop_uids=_uid_list(values.get("SOPInstanceUID", []), "SOPInstanceUID"),
        patient_name=one("PatientName"),
        patient_id=one("PatientID"),
        accession_number=one("AccessionNumber"),
        study_description=one("StudyDescription"),
        date_from=low,
        date_to=high,
        modalities_in_study=modalities,
        modality=one("Modality"),
        sop_class_uids=_uid_list(values.get("SOPClassUID", []), "SOPClassUID"),
        limit=_int(request, "limit", DEFAULT_LIMIT, MAX_LIMIT),
        offset=_int(request, "offset", 0, 10**9),
    )
    return query, include, warnings


def base_url(request: web.Request) -> str:
    """The DICOMweb root as the client reached it (same origin for OHIF): X-Forwarded-Proto/-Host behind a
    proxy, else the Host header; a Host without a port (dicomweb-client drops it) gets the listening port."""
    forwarded_host = request.headers.get("X-Forwarded-Host")
    if forwarded_host:
        scheme = request.headers.get("X-Forwarded-Proto", request.scheme)
        return f"{scheme}://{forwarded_host.split(',')[0].strip()}/dicom-web"
    host = request.host
    if host and not host.endswith("]") and ":" not in host.rsplit("]", 1)[-1]:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        port = sockname[1] if isinstance(sockname, tuple) and len(sockname) >= 2 else None
        if port and port not in (80, 443):
            host = f"{host}:{port}"
    return f"{request.scheme}://{host}/dicom-web"


def retrieve_url(root: str, row: dict[str, Any], level: str) -> str:
    url = f"{root}/studies/{row['study_instance_uid']}"
    if level in ("series", "instance"):
        url += f"/series/{row['series_instance_uid']}"
    if level == "instance":
        url += f"/instances/{row['sop_instance_uid']}"
    return url


def answer(
    request: web.Request, rows: list[dict[str, Any]], level: str, include: set[str] | None, warnings: list[str]
) -> web.Response:
    import json

    media = negotiate_json(request.headers.get("Accept"))
    root = base_url(request)
    if include is not None:
        include = {k for k in include if k in ATTRIBUTES}
    body = [qido_object(row, level, include, retrieve_url(root, row, level)) for row in rows]
    headers = {}
    if warnings:
        headers["Warning"] = ", ".join(f'299 telenet "{w}"' for w in warnings)
    return web.Response(
        body=json.dumps(body, ensure_ascii=False).encode("utf-8"),
        headers={**headers, "Content-Type": media},
    )
