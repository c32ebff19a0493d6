"""WADO-RS (PS3.18 10.4): instances as stored, metadata as DICOM JSON with BulkDataURIs, frames and bulk
data as octet streams. Files are streamed from disk; headers are parsed with large values left unread."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Final

from aiohttp import web
from pydicom import dcmread
from pydicom.encaps import get_frame
from pydicom.uid import UID

from gateways.dicomweb.dicomjson import (
    PIXEL_DATA,
    encapsulated,
    is_bulk,
    metadata_object,
    read_header,
    value_location,
)
from gateways.dicomweb.media import EXPLICIT_LE, BadRequest, negotiate_json, negotiate_multipart
from gateways.dicomweb.multipart import Part, send_multipart, stream_multipart
from gateways.dicomweb.qido import base_url
from telenet.domain.errors import NotFound
from telenet.services.study_search import StoredInstance

DICOM: Final = "application/dicom"
OCTETS: Final = "application/octet-stream"
MAX_FRAMES_PER_REQUEST: Final = 10_000


def instance_url(root: str, item: StoredInstance) -> str:
    return (
        f"{root}/studies/{item.study_instance_uid}/series/{item.series_instance_uid}/instances/{item.sop_instance_uid}"
    )


def _transcoded(path: str, syntax: str) -> bytes:
    """A native file re-encoded between the two little endian syntaxes (small, in memory)."""
    ds = dcmread(path)
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


async def retrieve(request: web.Request, items: list[StoredInstance]) -> web.StreamResponse:
    """``multipart/related; type="application/dicom"``: each file as stored (``transfer-syntax=*`` or the
    stored syntax), or re-encoded between the native syntaxes; anything else is 406."""
    stored = {item.transfer_syntax_uid for item in items}
    syntax = negotiate_multipart(request.headers.get("Accept"), DICOM, stored)
    root = base_url(request)
    if all(syntax in ("*", item.transfer_syntax_uid) for item in items):
        as_stored = [
            Part(
                f"{DICOM}; transfer-syntax={item.transfer_syntax_uid}",
                path=item.path,
                location=instance_url(root, item),
                size=item.size_bytes,
            )
            for item in items
        ]
        return await send_multipart(request, as_stored, DICOM)

    async def parts() -> AsyncIterator[Part]:
        for item in items:
            location = instance_url(root, item)
            if syntax in ("*", item.transfer_syntax_uid):
                content_type = f"{DICOM}; transfer-syntax={item.transfer_syntax_uid}"
                yield Part(content_type, path=item.path, location=location, size=item.size_bytes)
            else:
                data = await asyncio.to_thread(_transcoded, item.path, syntax)
                yield Part(f"{DICOM}; transfer-syntax={syntax}", data=data, location=location)

    return await stream_multipart(request, parts(), DICOM)


def _metadata(items: list[StoredInstance], root: str) -> bytes:
    objects = []
    for item in items:
        url = instance_url(root, item)
        ds = read_header(item.path)
        objects.append(metadata_object(ds, lambda tag, url=url: f"{url}/bulkdata/{tag}"))  # type: ignore[misc]
    return json.dumps(objects, ensure_ascii=False).encode("utf-8")


async def metadata(request: web.Request, items: list[StoredInstance]) -> web.Response:
    media = negotiate_json(request.headers.get("Accept"))
    body = await asyncio.to_thread(_metadata, items, base_url(request))
    return web.Response(body=body, headers={"Content-Type": media})


# --------------------------------------------------------------------------------------------------
# Frames and bulk data
# --------------------------------------------------------------------------------------------------


def parse_frame_list(text: str) -> list[int]:
    """``1,3,5`` as frame numbers (1-based); 400 for anything else."""
    try:
        numbers = [int(part) for part in text.split(",")]
    except ValueError:
        raise BadRequest(f"{text!r} is not a list of frame numbers", code="bad-frame-list") from None
    if not numbers or any(n < 1 for n in numbers) or len(numbers) > MAX_FRAMES_PER_REQUEST:
        raise BadRequest("frame numbers start at 1", code="bad-frame-list")
    return numbers


def _frame_parts(item: StoredInstance, numbers: list[int] | None, syntax: str) -> list[Part]:
    """Where each asked frame is: a file slice for native pixel data, the fragments' bytes for encapsulated."""
    ds = read_header(item.path)
    where = value_location(ds, f"{PIXEL_DATA:08X}")
    if where is None or "Rows" not in ds:
        raise NotFound("the instance has no pixel data", code="no-pixel-data")
    offset, _length, _undefined = where
    frames = int(ds.get("NumberOfFrames") or 1)
    numbers = numbers or list(range(1, frames + 1))
    if any(n > frames for n in numbers):
        raise NotFound(f"the instance has {frames} frame(s)", code="no-frame")
    if not encapsulated(ds):
        bits = int(ds.BitsAllocated)
        size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * bits // 8
        content_type = f"{OCTETS}; transfer-syntax={EXPLICIT_LE}"
        return [Part(content_type, path=item.path, offset=offset + (n - 1) * size, length=size) for n in numbers]
    content_type = f"{OCTETS}; transfer-syntax={item.transfer_syntax_uid}"
    parts = []
    with open(item.path, "rb") as fh:
        for n in numbers:
            fh.seek(offset)
            parts.append(Part(content_type, data=get_frame(fh, n - 1, number_of_frames=frames)))
    return parts


async def frames(request: web.Request, item: StoredInstance, numbers: list[int] | None) -> web.StreamResponse:
    """``multipart/related; type="application/octet-stream"``: native frames uncompressed (Explicit VR Little
    Endian byte order), encapsulated frames as stored when the client takes ``transfer-syntax=*``."""
    syntax = negotiate_multipart(request.headers.get("Accept"), OCTETS, {item.transfer_syntax_uid}, allow_images=True)
    parts = await asyncio.to_thread(_frame_parts, item, numbers, syntax)
    return await send_multipart(request, parts, OCTETS)


def _bulk_part(item: StoredInstance, hex_tag: str) -> Part:
    ds = read_header(item.path)
    where = value_location(ds, hex_tag)
    if where is None or not is_bulk(ds, int(hex_tag, 16)):
        raise NotFound(f"no bulk data {hex_tag} in the instance", code="no-bulkdata")
    offset, length, undefined = where
    if undefined:
        raise NotFound(f"{hex_tag} is encapsulated: read it as frames", code="no-bulkdata")
    return Part(OCTETS, path=item.path, offset=offset, length=length)


async def bulkdata(request: web.Request, item: StoredInstance, hex_tag: str) -> web.StreamResponse:
    """One top-level value as an octet stream; encapsulated PixelData as its frames."""
    if len(hex_tag) != 8 or any(c not in "0123456789abcdefABCDEF" for c in hex_tag):
        raise BadRequest(f"{hex_tag!r} is not a tag (8 hex digits)", code="bad-tag")
    if int(hex_tag, 16) == PIXEL_DATA and item.transfer_syntax_uid not in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2"):
        return await frames(request, item, None)
    negotiate_multipart(request.headers.get("Accept"), OCTETS, {EXPLICIT_LE})
    part = await asyncio.to_thread(_bulk_part, item, hex_tag)
    return await send_multipart(request, [part], OCTETS)
