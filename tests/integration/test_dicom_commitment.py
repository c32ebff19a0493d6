"""IHE RAD-10 and the worklist identifiers, with pynetdicom as the township modality: storage commitment after
C-STORE (all committed on the same association; one instance never sent listed as failed; a report on a new
association to the modality's registered node once it has released), the MWL item's Requested Procedure ID,
Scheduled Procedure Step ID and the Study Instance UID the order fixed carried by images and MPPS, and MPPS
DISCONTINUED leaving the request ordered with the reason visible to the clinic."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityPerformedProcedureStep, StorageCommitmentPushModel  # type: ignore[attr-defined]
from sqlalchemy import update

from gateways.dicom.modality_sim import ModalitySim
from telenet.config import Settings
from telenet.services.network import load_network
from telenet.store.models import InstitutionAETitle, Request
from tests.dicom_fixtures import TOWNSHIP_AE, dicom_settings, free_port, ordered

PUSH_INSTANCE = "1.2.840.10008.1.20.1.1"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return dicom_settings(tmp_path)


def commitment_request(transaction: str, images: list[Dataset], extra: list[tuple[str, str]] = ()) -> Dataset:  # type: ignore[assignment]
    ds = Dataset()
    ds.TransactionUID = transaction
    refs = []
    for cls, uid in [(str(i.SOPClassUID), str(i.SOPInstanceUID)) for i in images] + list(extra):
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = cls, uid
        refs.append(item)
    ds.ReferencedSOPSequence = Sequence(refs)
    return ds


class Reports:
    """N-EVENT-REPORTs the modality receives (on whichever association), with a way to wait for one."""

    def __init__(self) -> None:
        self.received: list[tuple[int, Dataset, str]] = []
        self.arrived = threading.Event()

    def handler(self, event: Any) -> tuple[int, None]:
        self.received.append((int(event.event_type), event.event_information, str(event.assoc.mode)))
        self.arrived.set()
        return 0x0000, None


def ask(port: int, request: Dataset, reports: Reports, *, wait: bool) -> int:
    """N-ACTION over a new association; keep it open for the report (``wait``) or release at once."""
    ae = AE(ae_title=TOWNSHIP_AE)
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(
        "127.0.0.1", port, ae_title="TELENET", evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler)]
    )
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_action(request, 1, StorageCommitmentPushModel, PUSH_INSTANCE)
        if wait:
            assert reports.arrived.wait(10), "no N-EVENT-REPORT on the open association"
    finally:
        assoc.release()
    return int(status.Status)


async def acquired(client: Any, node: Any, count: int, **order: Any) -> tuple[dict[str, Any], Dataset, list[Dataset]]:
    view = await ordered(client, modality="CT", **order)
    sim = ModalitySim(TOWNSHIP_AE, "127.0.0.1", node.port, modality="CT")
    (item,) = await asyncio.to_thread(sim.worklist, accession_number=view["accession_number"])
    images = sim.acquire(item, count)
    assert await asyncio.to_thread(sim.store, images) == [0] * count
    return view, item, images


async def test_commitment_on_the_same_association(client: Any, node: Any) -> None:
    """All committed; then one never sent and one of another class listed as failed; then a bad N-ACTION."""
    _, _, images = await acquired(client, node, 3)
    reports = Reports()
    transaction = generate_uid()
    assert await asyncio.to_thread(ask, node.port, commitment_request(transaction, images), reports, wait=True) == 0
    ((event_type, info, mode),) = reports.received
    assert (event_type, str(info.TransactionUID), mode) == (1, transaction, "requestor")
    assert sorted(str(r.ReferencedSOPInstanceUID) for r in info.ReferencedSOPSequence) == sorted(
        str(i.SOPInstanceUID) for i in images
    )
    assert "FailedSOPSequence" not in info

    missing = generate_uid()
    wrong_class = (str(ModalityPerformedProcedureStep), str(images[1].SOPInstanceUID))
    request = commitment_request(generate_uid(), images[:1], [(str(images[0].SOPClassUID), missing), wrong_class])
    reports = Reports()
    assert await asyncio.to_thread(ask, node.port, request, reports, wait=True) == 0
    ((event_type, info, _),) = reports.received
    assert event_type == 2
    assert [str(r.ReferencedSOPInstanceUID) for r in info.ReferencedSOPSequence] == [str(images[0].SOPInstanceUID)]
    assert {(str(f.ReferencedSOPInstanceUID), int(f.FailureReason)) for f in info.FailedSOPSequence} == {
        (missing, 0x0112),
        (str(images[1].SOPInstanceUID), 0x0119),
    }

    request = Dataset()
    request.TransactionUID = generate_uid()
    reports = Reports()
    assert await asyncio.to_thread(ask, node.port, request, reports, wait=False) == 0x0106
    assert reports.received == []


async def test_the_report_goes_to_the_registered_node_when_the_modality_has_released(
    client: Any, node: Any, demo_doc: dict[str, Any]
) -> None:
    _, _, images = await acquired(client, node, 2)
    reports = Reports()
    listener = AE(ae_title=TOWNSHIP_AE)
    listener.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
    port = free_port()
    server = listener.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler)]
    )
    try:
        # The modality's node comes from the network file, like every registry fact.
        township = next(i for i in demo_doc["institutions"] if TOWNSHIP_AE in i.get("ae_titles", []))
        township["dicom_nodes"] = [{"ae_title": TOWNSHIP_AE, "host": "127.0.0.1", "port": port}]
        await load_network(client.hub, demo_doc)
        async with client.hub.sessions() as session:
            stored = await session.get(InstitutionAETitle, TOWNSHIP_AE)
            assert stored is not None and (stored.host, stored.port) == ("127.0.0.1", port)
        transaction = generate_uid()
        assert (
            await asyncio.to_thread(ask, node.port, commitment_request(transaction, images), reports, wait=False) == 0
        )
        assert await asyncio.to_thread(reports.arrived.wait, 15)
    finally:
        server.shutdown()
    ((event_type, info, mode),) = reports.received
    assert (event_type, str(info.TransactionUID), mode) == (1, transaction, "acceptor")
    assert len(info.ReferencedSOPSequence) == 2


async def test_worklist_ids_follow_the_order_and_mpps_discontinued_keeps_it_ordered(client: Any, node: Any) -> None:
    view = await ordered(client, modality="CT")
    fixed = generate_uid()  # what an OMI's IPC-3 would have fixed
    async with client.hub.sessions() as session:
        await session.execute(update(Request).where(Request.id == view["id"]).values(study_instance_uid=fixed))
        await session.commit()
    sim = ModalitySim(TOWNSHIP_AE, "127.0.0.1", node.port, modality="CT")
    (item,) = await asyncio.to_thread(sim.worklist, accession_number=view["accession_number"])
    step = item.ScheduledProcedureStepSequence[0]
    assert (str(item.StudyInstanceUID), str(item.RequestedProcedureID)) == (fixed, str(view["id"]))
    assert str(step.ScheduledProcedureStepID) == str(view["id"])
    images = sim.acquire(item, 2)
    for image in images:
        del image.AccessionNumber  # matched by the Study Instance UID the order fixed
    assert await asyncio.to_thread(sim.store, images) == [0, 0]
    resp = await client.get(f"/api/v1/requests/{view['id']}/studies", headers=await client.login("township_doc"))
    studies = await resp.json()
    assert [s["study_instance_uid"] for s in studies["studies"]] == [fixed]
    seen = await (await client.get(f"/api/v1/requests/{view['id']}", headers=await client.login("township_doc"))).json()
    assert seen["order"]["study_instance_uid"] == fixed
    assert seen["order"]["scheduled_procedure_step_id"] == str(view["id"])

    # MPPS DISCONTINUED on another order: it stays ordered, on the worklist, with the reason for the clinic.
    view = await ordered(client, modality="CT", serial=2)
    (item,) = await asyncio.to_thread(sim.worklist, accession_number=view["accession_number"])
    mpps = await asyncio.to_thread(sim.mpps_in_progress, item, str(item.StudyInstanceUID))
    stop = Dataset()
    stop.PerformedProcedureStepStatus = "DISCONTINUED"
    reason = Dataset()
    reason.CodeValue, reason.CodingSchemeDesignator, reason.CodeMeaning = (
        "110514",
        "DCM",
        "Incorrect worklist entry selected",
    )
    stop.PerformedProcedureStepDiscontinuationReasonCodeSequence = Sequence([reason])
    await asyncio.to_thread(sim._n, lambda assoc: assoc.send_n_set(stop, ModalityPerformedProcedureStep, mpps), "N-SET")
    seen = await (await client.get(f"/api/v1/requests/{view['id']}", headers=await client.login("township_doc"))).json()
    assert seen["state"] == "ordered"
    assert seen["procedure_discontinued"] == "Incorrect worklist entry selected (110514)"
    still = await asyncio.to_thread(sim.worklist, accession_number=view["accession_number"])
    assert [str(i.AccessionNumber) for i in still] == [view["accession_number"]]
