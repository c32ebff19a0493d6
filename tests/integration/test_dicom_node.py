"""The hub as a DICOM node, driven by pynetdicom SCUs on both engines: the AE whitelist, C-STORE into the
index with matching, duplicates and refusals, completeness by quiet time, ECG on arrival, reconciliation."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.presentation import build_context
from sqlalchemy import func, select

from gateways.dicom import idle
from gateways.dicom.node import _WHITELIST_TTL_S, nodelay
from telenet.config import Settings
from telenet.services import studies
from telenet.store.models import DicomInstance, DicomStudy
from tests.dicom_fixtures import (
    OTHER_TOWNSHIP_AE,
    TOWNSHIP_AE,
    dicom_settings,
    instance,
    ordered,
    wait_for,
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return dicom_settings(tmp_path)


def _associate(port: int, calling: str, contexts: list[Any]) -> Any:
    ae = AE(ae_title=calling)
    ae.requested_contexts = contexts
    return ae.associate("127.0.0.1", port, ae_title="TELENET", evt_handlers=[(evt.EVT_CONN_OPEN, nodelay)])


def store(port: int, calling: str, datasets: list[Any]) -> list[Dataset]:
    """C-STORE each dataset (or file) on one association (on a thread: the hub answers from the test's loop)."""

    def sop_class(ds: Any) -> str:
        return str(ds.SOPClassUID if isinstance(ds, Dataset) else pydicom.dcmread(ds).SOPClassUID)

    def run() -> list[Dataset]:
        contexts = [build_context(uid) for uid in dict.fromkeys(sop_class(ds) for ds in datasets)]
        assoc = _associate(port, calling, contexts)
        assert assoc.is_established, "association refused"
        try:
            return [assoc.send_c_store(ds) for ds in datasets]
        finally:
            assoc.release()

    return asyncio.to_thread(run)  # type: ignore[return-value]


async def request_state(client: Any, request_id: int) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/requests/{request_id}", headers=await client.login("township_doc"))
    view: dict[str, Any] = await resp.json()
    return view


async def count(client: Any, model: Any) -> int:
    async with client.hub.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_only_registered_ae_titles_associate(node: Any) -> None:
    def echo(calling: str) -> tuple[bool, int | None]:
        assoc = _associate(node.port, calling, [build_context("1.2.840.10008.1.1")])
        if not assoc.is_established:
            return False, None
        status = assoc.send_c_echo()
        assoc.release()
        return True, int(status.Status)

    assert await asyncio.to_thread(echo, TOWNSHIP_AE) == (True, 0x0000)
    assert await asyncio.to_thread(echo, "UNKNOWN") == (False, None)


async def test_store_matches_by_accession_and_quiet_time_completes(client: Any, node: Any, clock: Any) -> None:
    view = await ordered(client, modality="CT")
    study_uid = "1.2.826.0.1.3680043.8.498.1"
    datasets = [
        instance("CT_small.dcm", study_uid=study_uid, accession=view["accession_number"]),
        instance("CT_small.dcm", study_uid=study_uid),  # no accession: matched by the known StudyInstanceUID
    ]
    statuses = await store(node.port, TOWNSHIP_AE, datasets)
    assert [int(s.Status) for s in statuses] == [0, 0]
    assert (await request_state(client, view["id"]))["state"] == "ordered", "not before the quiet time"

    clock.advance(seconds=1)

    async def queued() -> dict[str, Any] | None:
        state = await request_state(client, view["id"])
        return state if state["state"] == "queued" else None

    state = await wait_for(queued)
    assert state["data_completed_by"] == "quiet-time"

    async def completed() -> list[dict[str, Any]] | None:
        resp = await client.get(f"/api/v1/requests/{view['id']}/studies", headers=await client.login("county_reader"))
        assert resp.status == 200, await resp.text()
        found: list[dict[str, Any]] = (await resp.json())["studies"]
        return found if found and found[0]["completed_by"] else None

    studies = await wait_for(completed)
    assert [s["study_instance_uid"] for s in studies] == [study_uid]
    assert studies[0]["instance_count"] == 2 and studies[0]["completed_by"] == "quiet-time"
    assert studies[0]["matched_by"] == "accession"
    outsider = await client.get(f"/api/v1/requests/{view['id']}/studies", headers=await client.login("township_doc2"))
    assert outsider.status == 403


async def test_duplicate_is_idempotent_and_bad_dataset_refused(client: Any, node: Any, tmp_path: Path) -> None:
    ds = instance("MR_small.dcm")
    first, again = await store(node.port, TOWNSHIP_AE, [ds, ds])
    assert int(first.Status) == 0 and int(again.Status) == 0
    assert await count(client, DicomInstance) == 1

    broken = instance("MR_small.dcm")
    del broken.SOPInstanceUID  # the command set still names one (file meta); the dataset itself has none
    path = tmp_path / "broken.dcm"
    broken.save_as(path, enforce_file_format=True)
    (status,) = await store(node.port, TOWNSHIP_AE, [path])
    assert int(status.Status) == 0xC000
    assert "SOP Instance UID" in str(status.ErrorComment)
    assert await count(client, DicomInstance) == 1 and await count(client, DicomStudy) == 1
    leftovers = [p for p in node.store.root.rglob("*.dcm")]
    assert len(leftovers) == 1, "nothing of the refused dataset stays on disk"


async def test_unmatched_study_waits_for_reconciliation(client: Any, node: Any, clock: Any) -> None:
    view = await ordered(client, modality="CT", patient_id="P0042")
    ds = instance(
        "CT_small.dcm",
        accession="NOSUCHORDER",
        patient_id="P0042",
        patient_name="Zhang^San=张^三",
        charset="ISO_IR 192",
    )
    ds.PatientBirthDate, ds.PatientSex = "19800101", "M"  # the request's patient (see test_patient_mismatch)
    await store(node.port, TOWNSHIP_AE, [ds])
    # An accession of another institution's request never matches (scope): the other county's township.
    stray = instance("CT_small.dcm", accession=view["accession_number"])
    await store(node.port, OTHER_TOWNSHIP_AE, [stray])

    coordinator = await client.login("county_coord")
    listing = await (await client.get("/api/v1/reconciliation", headers=coordinator)).json()
    assert [i["study_instance_uid"] for i in listing["items"]] == [str(ds.StudyInstanceUID)]
    assert listing["items"][0]["source_institution"] == "NL-C01-K01-T01"
    assert (await client.get("/api/v1/reconciliation", headers=await client.login("township_doc"))).status == 403

    url = f"/api/v1/reconciliation/{ds.StudyInstanceUID}/link"
    resp = await client.post(url, json={"accession_number": view["accession_number"]}, headers=coordinator)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["request_id"] == view["id"]
    again = await client.post(url, json={"request_id": view["id"]}, headers=coordinator)
    assert again.status == 409
    assert (await (await client.get("/api/v1/reconciliation", headers=coordinator)).json())["items"] == []

    clock.advance(seconds=1)

    async def queued() -> bool:
        return (await request_state(client, view["id"]))["state"] == "queued"

    await wait_for(queued)


async def test_ecg_is_queued_on_arrival_with_a_measured_suggestion(client: Any, node: Any) -> None:
    view = await ordered(client, kind="ecg", modality="ECG")
    ecg = instance("waveform_ecg.dcm", accession=view["accession_number"])
    (status,) = await store(node.port, TOWNSHIP_AE, [ecg])
    assert int(status.Status) == 0
    state = await request_state(client, view["id"])
    assert state["state"] == "queued" and state["data_completed_by"] == "ecg", "no quiet time for an ECG"

    reader = await client.login("county_reader")
    studies = await (await client.get(f"/api/v1/requests/{view['id']}/studies", headers=reader)).json()
    (entry,) = studies["studies"][0]["ecg"]
    assert entry["suggestion"]["heart_rate_bpm"] and "suggestion" in entry["suggestion"]["note"]

    data = await (await client.get(f"/api/v1/ecg/{ecg.SOPInstanceUID}.json", headers=reader)).json()
    assert set(data["leads"]) >= {"I", "II", "V6"} and data["suggestion"]["method"].startswith("Pan-Tompkins")
    resp = await client.get(f"/api/v1/ecg/{ecg.SOPInstanceUID}.svg", headers=reader)
    assert resp.status == 200 and resp.content_type == "image/svg+xml"
    root = ET.fromstring(await resp.text())
    labels = {t.text for t in root.iter("{http://www.w3.org/2000/svg}text")}
    assert {"I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"} <= labels
    outsider = await client.get(f"/api/v1/ecg/{ecg.SOPInstanceUID}.svg", headers=await client.login("township_doc2"))
    assert outsider.status == 403


async def test_the_whitelist_hands_pynetdicom_only_the_callers_title_and_reloads_once_at_a_time(
    client: Any, node: Any, monkeypatch: Any
) -> None:
    """pynetdicom scans the list it gets once per association: a registered caller gets its own title only, an
    unknown one a list it cannot match. When the list is due for reloading, associations opening at once do
    not all reload it (at province scale, 1,000+ titles each time, they took seconds to open)."""
    whitelist = node.whitelist
    assert await asyncio.to_thread(whitelist.allowed, TOWNSHIP_AE) == [TOWNSHIP_AE]
    assert await asyncio.to_thread(whitelist.allowed, "NOSUCHAE") == ["\x00"]

    reloads: list[int] = []
    real = studies.registered_ae_titles

    async def counting(hub: Any) -> set[str]:
        reloads.append(1)
        await asyncio.sleep(0.2)  # a slow reload: the others arrive meanwhile
        return await real(hub)

    monkeypatch.setattr(studies, "registered_ae_titles", counting)
    whitelist._loaded_at -= _WHITELIST_TTL_S + 1  # due
    answers = await asyncio.gather(*(asyncio.to_thread(whitelist.allowed, TOWNSHIP_AE) for _ in range(8)))
    assert answers == [[TOWNSHIP_AE]] * 8
    assert len(reloads) == 1, reloads


async def test_an_idle_association_waits_instead_of_spinning_and_still_answers_at_once(
    node: Any, monkeypatch: Any
) -> None:
    """pynetdicom's two loops per association poll every 1 ms (20 idle associations cost a core). The node's
    acceptors wait for data or a message while idle: over 2 idle seconds each loop turns about 100 times at
    most (a 20 ms wait per turn, after 50 ms at the busy pace), not 1,000 or more; a C-ECHO after the pause is
    answered, and so is the release."""
    turns = {"dul": 0, "dimse": 0}
    dul_delay = idle.QuietDUL._run_loop_delay
    get_msg = idle.QuietDIMSE.get_msg

    def counted_delay(self: Any) -> float:
        turns["dul"] += 1
        return dul_delay.fget(self)  # type: ignore[misc]

    def counted_get(self: Any, block: bool = False) -> Any:
        turns["dimse"] += 0 if block else 1
        return get_msg(self, block)

    monkeypatch.setattr(idle.QuietDUL, "_run_loop_delay", property(counted_delay, dul_delay.fset))
    monkeypatch.setattr(idle.QuietDIMSE, "get_msg", counted_get)

    def idle_then_echo() -> tuple[dict[str, int], int]:
        assoc = _associate(node.port, TOWNSHIP_AE, [build_context("1.2.840.10008.1.1")])
        assert assoc.is_established
        time.sleep(0.3)  # the negotiation's busy spell is over
        start = dict(turns)
        time.sleep(2.0)
        counted = {k: turns[k] - start[k] for k in turns}
        status = int(assoc.send_c_echo().Status)
        assoc.release()
        assert assoc.is_released
        return counted, status

    counted, status = await asyncio.to_thread(idle_then_echo)
    assert status == 0x0000
    assert 0 < counted["dul"] <= 250, counted
    assert 0 < counted["dimse"] <= 250, counted


async def test_a_store_answered_late_is_not_cancelled_and_keeps_its_file(client: Any, node: Any) -> None:
    """Past the bridge's timeout the modality gets 0xA700 (out of resources), but the store is not cancelled:
    cancelled while its group commits, it would be committed all the same while its file was deleted, an index
    row without its file. It runs to its end: the instance is indexed with its file, and the modality's re-send
    is a duplicate."""
    assert client.hub.group_commit is not None
    ds = instance("MR_small.dcm")

    def store_late() -> Dataset:
        assoc = _associate(node.port, TOWNSHIP_AE, [build_context(str(ds.SOPClassUID))])
        assert assoc.is_established, "association refused"
        # Only the store's answer is late: the association's own checks had the usual time (on a loaded
        # machine they too may take more than half a second, and the association was then refused).
        node.bridge.timeout = 0.5
        client.hub.group_commit.wait_ms = 1500.0  # the member waits for its group's commit past the timeout
        try:
            return assoc.send_c_store(ds)
        finally:
            assoc.release()

    late = await asyncio.to_thread(store_late)
    assert int(late.Status) == 0xA700, late

    async def indexed() -> str | None:
        return await studies.indexed_path(client.hub, str(ds.SOPInstanceUID))

    path = await wait_for(indexed)
    assert await asyncio.to_thread(Path(path).is_file), "the indexed instance's file is in place"
    client.hub.group_commit.wait_ms = 2.0
    node.bridge.timeout = 30.0
    (again,) = await store(node.port, TOWNSHIP_AE, [ds])
    assert int(again.Status) == 0x0000
    assert await count(client, DicomInstance) == 1
    assert [p for p in node.store.root.rglob("*.dcm")] == [Path(path)]


# A-ASSOCIATE-RJ (result, source, reason) PS3.8 9.3.4: rejected-transient by the service provider's
# presentation layer, local limit exceeded; and rejected-permanent by the service user, calling AE unknown.
TRANSIENT = (0x02, 0x03, 0x02)
UNKNOWN_CALLING_AE = (0x01, 0x01, 0x03)


def rejection(assoc: Any) -> tuple[int, int, int] | None:
    """The A-ASSOCIATE-RJ an association was answered with, as (result, source, reason)."""
    answer = assoc.acceptor.primitive
    if not assoc.is_rejected or answer is None:
        return None
    return (int(answer.result), int(answer.result_source), int(answer.diagnostic))


async def test_an_association_the_hub_cannot_check_in_time_is_rejected_at_once_not_left_unanswered(node: Any) -> None:
    """The calling AE title is checked on the hub's loop; when the loop does not answer within the bridge's
    timeout, the peer gets an A-ASSOCIATE-RJ at once (before, the exception on pynetdicom's thread left it
    waiting for its own ACSE timeout with no answer at all)."""
    node.bridge.timeout = 0.2
    result: dict[str, Any] = {}

    def associate() -> None:
        ae = AE(ae_title=TOWNSHIP_AE)
        ae.acse_timeout = 10
        ae.add_requested_context("1.2.840.10008.1.1")
        assoc = ae.associate("127.0.0.1", node.port, ae_title="TELENET")
        result.update(established=assoc.is_established, rejected=assoc.is_rejected, why=rejection(assoc))
        if assoc.is_established:
            assoc.release()

    thread = threading.Thread(target=associate, daemon=True)
    thread.start()
    # The join blocks the hub's loop (on purpose) until the peer has its answer: the check cannot be answered.
    thread.join(15)
    # Rejected for now (transient, service provider, local limit exceeded): the modality tries again later.
    assert result == {"established": False, "rejected": True, "why": TRANSIENT}, result
    node.bridge.timeout = 30.0
    (answer,) = await store(node.port, TOWNSHIP_AE, [instance("MR_small.dcm")])
    assert int(answer.Status) == 0x0000, "once the hub answers again, the same title is accepted"


async def test_the_accept_loop_never_forces_a_full_garbage_collection(node: Any, monkeypatch: Any) -> None:
    """pynetdicom's server calls ``gc.collect()`` every 60 turns of its accept loop; with a large heap that
    holds the GIL, and so stops the event loop, for as long as it takes. The node's server does not."""
    collected: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda *args: collected.append(1) or 0)
    for _ in range(200):
        node._server.service_actions()
    assert collected == []
