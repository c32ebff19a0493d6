"""A write the SQLite write queue refuses (``telenet.store.write_gate``: the queue full, or the wait past its
bound) is an overload on every interface, not a processing failure: REST answers 503 with Retry-After
(``test_write_gate``), DICOM answers out of resources (0xA700 for C-STORE, PS3.4 B.2.3) with a comment that
says to send again, and nothing of the refused instance is kept."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, build_context
from sqlalchemy import func, select

from telenet.config import Settings
from telenet.store.models import DicomInstance
from tests.dicom_fixtures import TOWNSHIP_AE, dicom_settings, instance

# The write queue exists on SQLite only (PostgreSQL has no single write lock).
sqlite_only = pytest.mark.parametrize("database", ["sqlite"], indirect=True)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return dicom_settings(tmp_path)


def _c_store(port: int, ds: Dataset) -> Dataset:
    ae = AE(ae_title=TOWNSHIP_AE)
    ae.requested_contexts = [build_context(str(ds.SOPClassUID))]
    assoc = ae.associate("127.0.0.1", port, ae_title="TELENET")
    assert assoc.is_established, "the association was refused"
    try:
        status = assoc.send_c_store(ds)
    finally:
        assoc.release()
    return status


async def _instances(hub: Any) -> int:
    async with hub.reader() as session:
        return int(await session.scalar(select(func.count()).select_from(DicomInstance)) or 0)


@sqlite_only
async def test_a_c_store_refused_by_the_write_queue_is_out_of_resources(client: Any, node: Any) -> None:
    hub = client.hub
    gate = hub.write_gate
    before = await _instances(hub)
    await gate.acquire()  # another writer of this process holds the lock
    gate.max_waiting = 0  # and the queue is full: the next writer is refused at once
    try:
        status = await asyncio.to_thread(_c_store, node.port, instance())
    finally:
        gate.max_waiting = 5_000
        gate.release()
    assert int(status.Status) == 0xA700, f"status {int(status.Status):#06x}: {status}"
    assert "send again later" in str(status.ErrorComment)
    assert gate.refused >= 1
    assert await _instances(hub) == before, "a refused instance left a row"
    # The queue free again, the same modality's next C-STORE is stored.
    assert int((await asyncio.to_thread(_c_store, node.port, instance())).Status) == 0x0000
    assert await _instances(hub) == before + 1
