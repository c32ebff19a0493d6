"""A simulated township modality against the hub: worklist (scoped, Chinese names intact), C-STORE and MPPS,
completeness by MPPS exactly when every listed instance is present."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from gateways.dicom.modality_sim import AssociationRefused, ModalityError, ModalitySim
from telenet.config import Settings
from tests.dicom_fixtures import OTHER_TOWNSHIP_AE, TOWNSHIP_AE, dicom_settings, ordered


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return dicom_settings(tmp_path)


async def state_of(client: Any, request_id: int) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/requests/{request_id}", headers=await client.login("township_doc"))
    view: dict[str, Any] = await resp.json()
    return view


async def test_worklist_store_and_mpps_complete_the_request(client: Any, node: Any) -> None:
    view = await ordered(client, modality="DX", name="张三")
    await ordered(client, kind="consultation", modality=None)  # not a worklist item
    sim = ModalitySim(TOWNSHIP_AE, "127.0.0.1", node.port)
    items = await asyncio.to_thread(sim.worklist)
    assert [str(i.AccessionNumber) for i in items] == [view["accession_number"]]
    item = items[0]
    assert str(item.PatientName) == "张三" and str(item.PatientID) == "P0001"
    assert item.ScheduledProcedureStepSequence[0].Modality == "DX"

    other = ModalitySim(OTHER_TOWNSHIP_AE, "127.0.0.1", node.port)
    assert await asyncio.to_thread(other.worklist) == [], "another institution's orders stay invisible"

    done = await asyncio.to_thread(sim.perform, item, 3)
    assert done.store_statuses == [0, 0, 0]
    state = await state_of(client, view["id"])
    assert state["state"] == "queued" and state["data_completed_by"] == "mpps"
    assert await asyncio.to_thread(sim.worklist) == [], "a queued request has left the worklist"

    with pytest.raises(ModalityError, match="0x0110"):
        await asyncio.to_thread(sim.mpps_completed, done.mpps_uid, done.images)


async def test_mpps_waits_for_every_listed_instance(client: Any, node: Any) -> None:
    view = await ordered(client, modality="CT")
    sim = ModalitySim(TOWNSHIP_AE, "127.0.0.1", node.port, modality="CT")
    (item,) = await asyncio.to_thread(sim.worklist, accession_number=view["accession_number"])
    images = sim.acquire(item, 2)
    mpps = await asyncio.to_thread(sim.mpps_in_progress, item, str(images[0].StudyInstanceUID))
    await asyncio.to_thread(sim.store, images[:1])
    await asyncio.to_thread(sim.mpps_completed, mpps, images)
    assert (await state_of(client, view["id"]))["state"] == "ordered", "one listed instance is still missing"
    await asyncio.to_thread(sim.store, images[1:])
    state = await state_of(client, view["id"])
    assert state["state"] == "queued" and state["data_completed_by"] == "mpps"


async def test_a_refused_association_is_tried_again_as_a_modality_s_queue_does(client: Any, node: Any) -> None:
    """The node refuses past its association limit (A-ASSOCIATE-RJ, transient); the simulated modality tries
    again after a pause, and gives up with AssociationRefused after the last pause."""
    await ordered(client, modality="DX", name="张三")
    worklist = [build_context(ModalityWorklistInformationFind)]
    held = await asyncio.to_thread(ModalitySim(TOWNSHIP_AE, "127.0.0.1", node.port)._associate, worklist)
    node.ae.maximum_associations = 1  # the one above holds it
    retried: list[float] = []

    def free_on_second_retry() -> None:
        retried.append(1)
        if len(retried) == 2:
            held.release()

    try:
        patient = ModalitySim(
            TOWNSHIP_AE, "127.0.0.1", node.port, retry_pauses=(0.5,) * 4, on_retry=free_on_second_retry
        )
        items = await asyncio.to_thread(patient.worklist)
        assert len(items) == 1 and len(retried) >= 2
        holder = ModalitySim(TOWNSHIP_AE, "127.0.0.1", node.port, retry_pauses=(0.2,) * 10)
        held = await asyncio.to_thread(holder._associate, worklist)  # once the node has let the last one go
        impatient = ModalitySim(TOWNSHIP_AE, "127.0.0.1", node.port, retry_pauses=(0.01, 0.01), on_retry=retried.clear)
        with pytest.raises(AssociationRefused):
            await asyncio.to_thread(impatient.worklist)
    finally:
        node.ae.maximum_associations = 200
        if held.is_established:
            await asyncio.to_thread(held.release)
