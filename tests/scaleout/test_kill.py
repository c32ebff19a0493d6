"""A hub process is killed with SIGKILL while it holds claims, the outbox sender's lock and a DICOM association
in the middle of a study: nothing acknowledged is lost, and nothing is done twice."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from gateways.dicom.node import nodelay
from telenet.services.exclusive import lock_key
from telenet.sim.his import ResultListener
from tests.conftest import needs_postgres
from tests.dicom_fixtures import TOWNSHIP_AE, instance
from tests.factories import order
from tests.scaleout.conftest import Cluster, HubNode

pytestmark = needs_postgres("several hub processes")

# Short leases (6 s for routine work) so that a dead reader's claim comes back within the test.
CLUSTER_ENV = {
    "TELENET_LEASE_MINUTES_ROUTINE": "0.1",
    "TELENET_STUDY_QUIET_SECONDS": "1",
    "TELENET_SWEEP_INTERVAL_SECONDS": "0.5",
}
FINAL = {"findings": "双肺纹理清晰。", "impression": "未见异常。", "final": True}


class Rest:
    def __init__(self, cluster: Cluster, http: aiohttp.ClientSession) -> None:
        self.cluster = cluster
        self.http = http

    async def call(self, node: HubNode, user: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.cluster.token(node, user)}"}
        async with self.http.request(method, f"{node.url}{path}", json=body, headers=headers) as r:
            return r.status, await r.json(content_type=None)


async def holder_of(database_url: str, name: str) -> int | None:
    """The PostgreSQL backend pid holding a job's advisory lock (None when nobody does)."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            key = lock_key(name)
            pid = await conn.scalar(
                text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = :lo AND classid = :hi"
                ),
                {"lo": key & 0xFFFFFFFF, "hi": (key >> 32) & 0xFFFFFFFF},
            )
            return int(pid) if pid is not None else None
    finally:
        await engine.dispose()


def send(port: int, datasets: list[Any], *, release: bool = True) -> Any:
    ae = AE(ae_title=TOWNSHIP_AE)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="TELENET", evt_handlers=[(evt.EVT_CONN_OPEN, nodelay)])
    assert assoc.is_established
    for ds in datasets:
        assert assoc.send_c_store(ds).Status == 0x0000
    if release:
        assoc.release()
    return assoc


async def eventually(check: Any, what: Any, seconds: float = 60.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out: {what() if callable(what) else what}")


async def test_sigkill_loses_nothing_acknowledged(cluster: Cluster) -> None:
    a, b, _ = cluster.nodes
    results: list[str] = []
    his = ResultListener(cluster.his_port, lambda accession, status, _name: results.append(accession))
    async with aiohttp.ClientSession() as http:
        rest = Rest(cluster, http)
        # The first process started holds the background jobs' locks.
        sender_before = await eventually(lambda: holder_of(cluster.database_url, "hl7-sender"), "hl7 sender lock")

        ids = {}
        for key in ("FINAL1", "FINAL2", "CLAIMED", "STUDY"):
            status, view = await rest.call(
                a,
                "township_doc",
                "POST",
                "/api/v1/requests",
                order(patient_id=f"K-{key}", accession_number=f"KILL-{key}"),
            )
            assert status == 201, view
            ids[key] = view["id"]
        for key in ("FINAL1", "FINAL2", "CLAIMED"):
            assert (await rest.call(a, "his_t01", "POST", f"/api/v1/requests/{ids[key]}/data-complete", {}))[0] == 200
            assert (await rest.call(a, "county_reader", "POST", f"/api/v1/requests/{ids[key]}/claim"))[0] == 200
        # Two reports go final while the township HIS is down: their ORU^R01 wait in the outbox.
        for key in ("FINAL1", "FINAL2"):
            assert (await rest.call(a, "county_reader", "POST", f"/api/v1/requests/{ids[key]}/report", FINAL))[0] == 200
        # A modality is in the middle of a study on process A: one of three instances sent, no release.
        study_uid = "1.2.826.0.1.3680043.8.498.424242"
        images = [
            instance(study_uid=study_uid, accession="KILL-STUDY", sop_uid=f"{study_uid}.{n}") for n in range(1, 4)
        ]
        dangling = await asyncio.to_thread(send, a.dicom_port, images[:1], release=False)

        a.kill()
        dangling.abort()

        # The modality's retry of the interrupted study goes to process B: every instance, the first again.
        await asyncio.to_thread(send, b.dicom_port, images)
        await his.start()
        try:

            async def delivered() -> bool:
                return sorted(results) == ["KILL-FINAL1", "KILL-FINAL2"]

            await eventually(delivered, lambda: f"both ORU^R01 after the takeover (received {results})")
            sender_after = await holder_of(cluster.database_url, "hl7-sender")
            assert sender_after is not None and sender_after != sender_before, "another process took the outbox over"

            async def returned() -> bool:
                status, view = await rest.call(b, "county_reader", "GET", f"/api/v1/requests/{ids['CLAIMED']}")
                return status == 200 and view["state"] == "queued" and view["claimed_by"] is None

            await eventually(returned, "the dead process's claim back in the queue after its lease")

            async def study_complete() -> Any:
                _, view = await rest.call(b, "township_doc", "GET", f"/api/v1/requests/{ids['STUDY']}")
                return view if view["state"] == "queued" else None

            view = await eventually(study_complete, "the interrupted study complete, once")
            assert view["data_completed_by"] == "quiet-time"
            status, studies = await rest.call(b, "county_reader", "GET", f"/api/v1/requests/{ids['STUDY']}/studies")
            assert status == 200, studies
            assert len(studies["studies"]) == 1 and studies["studies"][0]["instance_count"] == 3

            # The rest is read and signed through the survivors; each result reaches the HIS exactly once.
            for key in ("CLAIMED", "STUDY"):
                assert (await rest.call(b, "county_reader", "POST", f"/api/v1/requests/{ids[key]}/claim"))[0] == 200
                assert (await rest.call(b, "county_reader", "POST", f"/api/v1/requests/{ids[key]}/report", FINAL))[
                    0
                ] == 200

            async def all_four() -> bool:
                return len(results) >= 4

            await eventually(all_four, "all four results")
            await asyncio.sleep(3)  # a duplicate would arrive in this window
            assert sorted(results) == sorted(f"KILL-{k}" for k in ids), results
        finally:
            await his.stop()
    a.start()
