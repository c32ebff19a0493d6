"""Attachments of a request (a consultation's PDF report of an earlier visit, a JPEG photo of a wound, a DICOM
image): added by the requesting side and, for a consultation, by its consultant center and its participants
while invited; opened by whoever may see the request (a participant only while invited); each opening audited.
Files are stored once by content (SHA-256), written durably before their row commits; the type is checked from
the bytes (magic numbers), not the name, and the size is limited."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telenet.domain.access import Actor
from telenet.domain.errors import Invalid, NotFound
from telenet.domain.lifecycle import Kind
from telenet.services import consultation_members
from telenet.services.access import load_request, require_requesting_side
from telenet.services.hub import Hub, use_case
from telenet.store.models import Attachment, Center, Participant, Request

MAX_BYTES = 4 * 1024 * 1024
MAX_PER_REQUEST = 20
# content type: (magic bytes, file extension)
KINDS = {
    "application/pdf": (b"%PDF-", ".pdf"),
    "image/jpeg": (b"\xff\xd8\xff", ".jpg"),
    "image/png": (b"\x89PNG\r\n\x1a\n", ".png"),
    # DICOM Part 10: a 128-byte preamble, then "DICM" (checked at offset 128 by ``_is_kind``).
    "application/dicom": (b"DICM", ".dcm"),
}
_MAGIC_OFFSET = {"application/dicom": 128}


def _is_kind(content_type: str, data: bytes) -> bool:
    offset = _MAGIC_OFFSET.get(content_type, 0)
    return data[offset:].startswith(KINDS[content_type][0])


def check(filename: str, content_type: str, data: bytes) -> str:
    """The cleaned file name; Invalid when the file is empty, too large, or not what it says it is."""
    name = os.path.basename(filename.replace("\\", "/")).strip()
    if not name or len(name) > 200 or any(ord(c) < 32 for c in name):
        raise Invalid("the file name must have 1 to 200 printable characters", code="bad-filename")
    kind = KINDS.get(content_type)
    if kind is None:
        raise Invalid(
            f"attachments are PDF, JPEG, PNG or DICOM, not {content_type or 'unknown'}", code="bad-attachment-type"
        )
    if not data:
        raise Invalid("the file is empty", code="empty-attachment")
    if len(data) > MAX_BYTES:
        raise Invalid(f"an attachment has at most {MAX_BYTES // (1024 * 1024)} MB", code="attachment-too-large")
    if not _is_kind(content_type, data):
        raise Invalid(f"the file is not a {content_type} file", code="bad-attachment-type")
    return name


def _write(directory: Path, digest: str, suffix: str, data: bytes) -> Path:
    """Durably: a temporary file fsynced, renamed into place, the directory fsynced."""
    final = directory / digest[:2] / f"{digest}{suffix}"
    if final.is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return final


def view(item: Attachment) -> dict[str, Any]:
    return {
        "id": item.id,
        "request_id": item.request_id,
        "filename": item.filename,
        "content_type": item.content_type,
        "size": item.size,
        "sha256": item.sha256,
        "uploaded_by": item.uploaded_by,
        "uploaded_at": item.uploaded_at.isoformat(),
        "href": f"/api/v1/attachments/{item.id}",
    }


async def add(
    hub: Hub, actor: Actor, request_id: int, filename: str, content_type: str, data: bytes, directory: Path
) -> dict[str, Any]:
    """Attach a file to a request of the actor's institution; the attachment's view."""
    name = check(filename, content_type, data)
    digest = hashlib.sha256(data).hexdigest()
    async with use_case(hub, actor, "attachment.add", "request", str(request_id)) as uow:
        request = await load_request(uow.session, actor, request_id)
        uow.audit(object_path=request.requesting_path, detail={"filename": name, "size": len(data)})
        await _require_uploader(uow.session, actor, request)
        if len(await attachments_of(uow.session, request_id)) >= MAX_PER_REQUEST:
            raise Invalid(f"a request has at most {MAX_PER_REQUEST} attachments", code="too-many-attachments")
        await asyncio.to_thread(_write, directory, digest, KINDS[content_type][1], data)
        item = Attachment(
            request_id=request_id,
            filename=name,
            content_type=content_type,
            size=len(data),
            sha256=digest,
            uploaded_by=actor.username,
            uploaded_at=hub.clock.now(),
        )
        uow.session.add(item)
        await uow.session.flush()
        result = view(item)
    return result


async def _require_uploader(session: AsyncSession, actor: Actor, request: Request) -> None:
    """The requesting side attaches to any request; a consultation also takes files from its consultant center
    and from its participants while they are invited (``load_request`` has checked that the actor sees it)."""
    if request.kind == Kind.CONSULTATION.value:
        center = await session.get(Center, request.center_id)
        assert center is not None
        if consultation_members.side_of(actor, request, center) is not None:
            return
        participant = await session.get(Participant, (request.id, actor.user_id))
        if participant is not None and participant.removed_at is None:
            return
    require_requesting_side(actor, request, action="attach files")


async def attachments_of(session: AsyncSession, request_id: int) -> list[dict[str, Any]]:
    rows = (
        (await session.execute(select(Attachment).where(Attachment.request_id == request_id).order_by(Attachment.id)))
        .scalars()
        .all()
    )
    return [view(r) for r in rows]


async def list_for(hub: Hub, actor: Actor, request_id: int) -> list[dict[str, Any]]:
    async with use_case(hub, actor, "attachment.list", "request", str(request_id)) as uow:
        request = await load_request(uow.session, actor, request_id)
        uow.audit(object_path=request.requesting_path)
        return await attachments_of(uow.session, request_id)


async def open_file(hub: Hub, actor: Actor, attachment_id: int, directory: Path) -> tuple[Path, dict[str, Any]]:
    """The file of an attachment for whoever may see its request (audited per opening)."""
    async with use_case(hub, actor, "attachment.read", "attachment", str(attachment_id)) as uow:
        item = await uow.session.get(Attachment, attachment_id)
        if item is None:
            raise NotFound(f"no attachment {attachment_id}")
        request = await load_request(uow.session, actor, item.request_id)
        uow.audit(object_path=request.requesting_path, detail={"request_id": item.request_id})
        path = directory / item.sha256[:2] / f"{item.sha256}{KINDS[item.content_type][1]}"
        if not path.is_file():
            raise NotFound(f"the file of attachment {attachment_id} is missing")
        return path, view(item)
