"""Attachments of a request over REST: PDF/JPEG/PNG checked by their bytes, the requesting side adds, whoever
sees the request opens (audited), nothing is stored for a refused file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from telenet.store.models import Attachment, AuditEntry
from tests.factories import order

pytestmark = pytest.mark.storage

PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64 + b"\xff\xd9"


async def consultation(client: Any) -> int:
    body = order(kind="consultation", scheduled_at="2026-03-02T06:00:00+00:00")
    body.pop("modality", None)
    made = await client.post("/api/v1/requests", json=body, headers=await client.login("township_doc"))
    assert made.status == 201, await made.text()
    return int((await made.json())["id"])


async def attach(client: Any, user: str, request_id: int, data: bytes, content_type: str, name: str) -> Any:
    headers = {**(await client.login(user)), "Content-Type": content_type, "X-Filename": name}
    return await client.post(f"/api/v1/requests/{request_id}/attachments", data=data, headers=headers)


async def test_attach_and_open_with_scope_and_audit(client: Any) -> None:
    rid = await consultation(client)
    added = await attach(
        client, "township_doc", rid, PDF, "application/pdf", "%E5%87%BA%E9%99%A2%E5%B0%8F%E7%BB%93.pdf"
    )
    assert added.status == 201, await added.text()
    view = await added.json()
    assert view["filename"] == "出院小结.pdf"
    assert view["size"] == len(PDF)
    listed = await client.get(f"/api/v1/requests/{rid}/attachments", headers=await client.login("township_doc"))
    assert [a["filename"] for a in (await listed.json())["items"]] == ["出院小结.pdf"]
    opened = await client.get(view["href"], headers=await client.login("township_doc"))
    assert opened.status == 200
    assert opened.headers["Content-Type"] == "application/pdf"
    assert await opened.read() == PDF
    other = await client.get(view["href"], headers=await client.login("township_doc2"))
    assert other.status == 403
    async with client.hub.sessions() as session:
        reads = (
            await session.execute(
                select(AuditEntry.actor, AuditEntry.outcome).where(AuditEntry.action == "attachment.read")
            )
        ).all()
    assert sorted(reads) == [("township_doc", "ok"), ("township_doc2", "scope")]


async def test_refused_files_leave_nothing(client: Any, settings: Any) -> None:
    rid = await consultation(client)
    cases = [
        (b"MZ\x90\x00 not a pdf", "application/pdf", "a.pdf", "bad-attachment-type"),
        (JPEG, "application/zip", "a.zip", "bad-attachment-type"),
        (b"", "image/jpeg", "a.jpg", "empty-attachment"),
        (JPEG, "image/jpeg", "", "bad-filename"),
    ]
    for data, content_type, name, code in cases:
        resp = await attach(client, "township_doc", rid, data, content_type, name)
        assert resp.status == 422, (code, await resp.text())
        assert (await resp.json())["type"].endswith(code)
    reader = await attach(client, "county_reader", rid, JPEG, "image/jpeg", "x.jpg")
    assert reader.status == 403
    async with client.hub.sessions() as session:
        assert (await session.execute(select(Attachment))).scalars().all() == []
    assert not list((Path(settings.var_dir) / "attachments").glob("*/*"))
