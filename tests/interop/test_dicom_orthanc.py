"""Orthanc (the Debian package, started by the test on free ports) as the county center's PACS: forwarded
studies arrive in its REST ``/studies``; with Orthanc down the forward retries, and is delivered once Orthanc
is back, also across a hub restart in between."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.presentation import build_context
from sqlalchemy import select

from telenet.config import Settings
from telenet.services.network import load_network
from telenet.store.models import Event
from tests.conftest import require_tool
from tests.dicom_fixtures import TOWNSHIP_AE, dicom_settings, free_port, instance, node_for, wait_for
from tests.factories import order

PACS_AE = "K01PACS"


class Orthanc:
    """One Orthanc for the module, stopped and started again by the tests that need an outage."""

    def __init__(self, executable: str, workdir: Path) -> None:
        self.executable = executable
        self.workdir = workdir
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.config = workdir / "orthanc.json"
        self.config.write_text(
            json.dumps(
                {
                    "Name": "telenet-test-k01pacs",
                    "StorageDirectory": str(workdir / "storage"),
                    "IndexDirectory": str(workdir / "storage"),
                    "DicomAet": PACS_AE,
                    "DicomPort": self.dicom_port,
                    "HttpPort": self.http_port,
                    "RemoteAccessAllowed": False,
                    "AuthenticationEnabled": False,
                    "DicomCheckCalledAet": True,
                    "DicomModalities": {"telenet": ["TELENET", "127.0.0.1", 11112]},
                    "DicomAlwaysAllowStore": False,
                    "DicomCheckModalityHost": False,
                    "Plugins": [],
                    "StableAge": 1,
                }
            )
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "TCP_NODELAY": "1"}
        log = open(self.workdir / "orthanc.log", "ab")
        self.process = subprocess.Popen([self.executable, str(self.config)], stdout=log, stderr=log, env=env)
        for _ in range(200):
            try:
                self.get("/system")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
        raise AssertionError("Orthanc did not start; see " + str(self.workdir / "orthanc.log"))

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)
            self.process = None

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as resp:
            return json.loads(resp.read())

    def study_uids(self) -> set[str]:
        return {s["MainDicomTags"]["StudyInstanceUID"] for s in self.get("/studies?expand")}


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    server = Orthanc(require_tool("Orthanc"), tmp_path_factory.mktemp("orthanc"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return dicom_settings(tmp_path)


def pointed_at(doc: dict[str, Any], port: int) -> dict[str, Any]:
    patched = copy.deepcopy(doc)
    for center in patched["centers"]:
        if center["code"] == "NL-C01-K01-IMG":
            center["dicom_node"] = {"ae_title": PACS_AE, "host": "127.0.0.1", "port": port}
    return patched


def send(port: int, datasets: list[Any]) -> None:
    ae = AE(ae_title=TOWNSHIP_AE)
    ae.requested_contexts = [build_context(str(ds.SOPClassUID)) for ds in datasets[:1]]
    assoc = ae.associate("127.0.0.1", port, ae_title="TELENET")
    assert assoc.is_established
    for ds in datasets:
        assert int(assoc.send_c_store(ds).Status) == 0
    assoc.release()


async def complete_study(client: Any, node: Any, clock: Any, count: int = 2) -> str:
    """Order, send ``count`` instances with the accession number, let the quiet time pass; the study UID."""
    resp = await client.post("/api/v1/requests", json=order(modality="CT"), headers=await client.login("township_doc"))
    view = await resp.json()
    first = instance("CT_small.dcm", accession=view["accession_number"])
    rest = [instance("CT_small.dcm", study_uid=str(first.StudyInstanceUID)) for _ in range(count - 1)]
    await asyncio.to_thread(send, node.port, [first, *rest])
    clock.advance(seconds=1)

    async def queued() -> bool:
        got = await client.get(f"/api/v1/requests/{view['id']}", headers=await client.login("township_doc"))
        return bool((await got.json())["state"] == "queued")

    # Bounded, but not by the default 10 s: under the suite's load the quiet-study sweep once took longer.
    await wait_for(queued, within_s=30)
    return str(first.StudyInstanceUID)


async def forwarding(client: Any) -> dict[str, Any]:
    resp = await client.get("/api/v1/forwarding", headers=await client.login("county_coord"))
    body: dict[str, Any] = await resp.json()
    return body


async def test_forwarded_study_appears_in_orthanc(
    client: Any, settings: Settings, clock: Any, orthanc: Orthanc, demo_doc: dict[str, Any]
) -> None:
    await load_network(client.hub, pointed_at(demo_doc, orthanc.dicom_port))
    async with node_for(client.hub, settings) as node:
        study_uid = await complete_study(client, node, clock)

        async def arrived() -> bool:
            done = [j["state"] for j in (await forwarding(client))["items"]] == ["done"]
            return done and study_uid in await asyncio.to_thread(orthanc.study_uids)

        await wait_for(arrived, within_s=20)
        (job,) = (await forwarding(client))["items"]
        assert job["instances_sent"] == 2


async def test_outage_and_hub_restart_lose_nothing(
    client: Any, settings: Settings, clock: Any, orthanc: Orthanc, demo_doc: dict[str, Any]
) -> None:
    await load_network(client.hub, pointed_at(demo_doc, orthanc.dicom_port))
    orthanc.stop()
    try:
        async with node_for(client.hub, settings) as node:
            study_uid = await complete_study(client, node, clock)

            async def failed(attempts: int) -> bool:
                items = (await forwarding(client))["items"]
                return bool(items) and items[0]["attempts"] >= attempts and items[0]["state"] == "pending"

            await wait_for(lambda: failed(1))
            clock.advance(seconds=5)
            await wait_for(lambda: failed(2))  # it retries
        # the hub is down here; the job is in the database
    finally:
        await asyncio.to_thread(orthanc.start)
    async with node_for(client.hub, settings):
        clock.advance(seconds=5)

        async def delivered() -> bool:
            done = (await forwarding(client))["items"][0]["state"] == "done"
            return done and study_uid in await asyncio.to_thread(orthanc.study_uids)

        await wait_for(delivered, within_s=60)  # a restarted hub on a loaded machine (the full suite in parallel)
        job = (await forwarding(client))["items"][0]
        assert job["attempts"] >= 2 and job["instances_sent"] == 2
        assert (await forwarding(client))["outages"] == []
    async with client.hub.sessions() as session:
        names = [n for (n,) in (await session.execute(select(Event.name))).all() if n.startswith("forwarding.")]
    assert names == ["forwarding.destination_down", "forwarding.destination_up"], names
