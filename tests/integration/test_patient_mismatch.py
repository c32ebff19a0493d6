"""A study whose patient contradicts the request's is never attached to it silently: the reconciliation link
is refused unless a coordinator confirms with a reason (audited), and an MPPS naming the request's accession
with another patient does not link its study."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from gateways.dicom.modality_sim import ModalitySim
from telenet.config import Settings
from telenet.store.models import AuditEntry, DicomStudy, Event, Mpps
from tests.dicom_fixtures import TOWNSHIP_AE, dicom_settings, instance, ordered
from tests.integration.test_dicom_node import store


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return dicom_settings(tmp_path)


async def test_a_link_to_another_patients_request_needs_a_confirmed_reason(client: Any, node: Any) -> None:
    view = await ordered(client, modality="CT", patient_id="P0042")  # 张三, M, 1980-01-01
    ds = instance(
        "CT_small.dcm", accession="NOSUCHORDER", patient_id="P0099", patient_name="Li^Si=李^四", charset="ISO_IR 192"
    )
    ds.PatientBirthDate, ds.PatientSex = "19750505", "F"
    await store(node.port, TOWNSHIP_AE, [ds])
    coordinator = await client.login("county_coord")
    url = f"/api/v1/reconciliation/{ds.StudyInstanceUID}/link"

    refused = await client.post(url, json={"request_id": view["id"]}, headers=coordinator)
    assert refused.status == 409
    problem = await refused.json()
    assert problem["type"] == "urn:telenet:problem:patient-mismatch"
    assert [e["field"] for e in problem["errors"]] == ["patient_id", "name", "birth_date", "sex"]
    async with client.hub.sessions() as session:
        study = (
            await session.execute(select(DicomStudy).where(DicomStudy.study_instance_uid == str(ds.StudyInstanceUID)))
        ).scalar_one()
    assert study.request_id is None, "nothing linked"

    reason = "同一患者：HIS登记错误，已电话核实"
    resp = await client.post(url, json={"request_id": view["id"], "confirm_reason": reason}, headers=coordinator)
    assert resp.status == 200, await resp.text()
    async with client.hub.sessions() as session:
        rows = (
            await session.execute(
                select(AuditEntry.outcome, AuditEntry.detail)
                .where(AuditEntry.action == "dicom.reconciliation.link")
                .order_by(AuditEntry.id)
            )
        ).all()
    assert [r.outcome for r in rows] == ["patient-mismatch", "ok"]
    assert rows[1].detail["confirm_reason"] == reason and rows[1].detail["patient_mismatch"] == [
        "patient_id",
        "name",
        "birth_date",
        "sex",
    ]


async def test_an_mpps_with_another_patient_does_not_link_its_study(client: Any, node: Any) -> None:
    view = await ordered(client, modality="CT")
    sim = ModalitySim(TOWNSHIP_AE, "127.0.0.1", node.port, modality="CT")
    (item,) = await asyncio.to_thread(sim.worklist, accession_number=view["accession_number"])
    item.PatientID, item.PatientName = "P0099", "李四"
    images = sim.acquire(item, 1)
    mpps_uid = await asyncio.to_thread(sim.mpps_in_progress, item, str(images[0].StudyInstanceUID))
    async with client.hub.sessions() as session:
        mpps = (await session.execute(select(Mpps).where(Mpps.sop_instance_uid == mpps_uid))).scalar_one()
        linked = (
            await session.execute(
                select(DicomStudy).where(DicomStudy.study_instance_uid == str(images[0].StudyInstanceUID))
            )
        ).scalar_one_or_none()
        audit = (
            await session.execute(select(AuditEntry.detail).where(AuditEntry.action == "dicom.mpps.create"))
        ).scalar_one()
    assert mpps.request_id is None and linked is None
    assert audit["patient_mismatch"] == ["patient_id", "name"] and audit["request_id"] == view["id"]


async def test_an_instance_of_another_patient_is_not_linked_by_its_accession(
    client: Any, node: Any, caplog: pytest.LogCaptureFixture
) -> None:
    view = await ordered(client, modality="CT", patient_id="P0042")  # 张三, M, 1980-01-01
    study_uid = generate_uid()
    first, second = (
        instance(
            "CT_small.dcm",
            study_uid=study_uid,
            accession=view["accession_number"],
            patient_id="P0099",
            patient_name="Li^Si=李^四",
            charset="ISO_IR 192",
        )
        for _ in range(2)
    )
    with caplog.at_level(logging.WARNING, logger="telenet.services.studies"):
        statuses = await store(node.port, TOWNSHIP_AE, [first, second])  # a real association, both stored
    assert [s.Status for s in statuses] == [0x0000, 0x0000]
    assert "not linked, left for reconciliation" in caplog.text
    async with client.hub.sessions() as session:
        study = (
            await session.execute(select(DicomStudy).where(DicomStudy.study_instance_uid == study_uid))
        ).scalar_one()
        audits = (
            (
                await session.execute(
                    select(AuditEntry.detail).where(AuditEntry.action == "dicom.store").order_by(AuditEntry.id)
                )
            )
            .scalars()
            .all()
        )
        event = (
            (await session.execute(select(Event.data).where(Event.name == "study.unmatched").order_by(Event.id)))
            .scalars()
            .first()
        )
    assert study.request_id is None and study.matched_by is None, "neither instance linked the study"
    assert [a["patient_mismatch"] for a in audits] == [["patient_id", "name"]] * 2
    assert (
        event is not None and event["request_id"] == view["id"] and event["patient_mismatch"] == ["patient_id", "name"]
    )
    state = await (
        await client.get(f"/api/v1/requests/{view['id']}", headers=await client.login("township_doc"))
    ).json()
    assert state["state"] == "ordered", "the request did not move"

    listing = await (await client.get("/api/v1/reconciliation", headers=await client.login("county_coord"))).json()
    (item,) = [i for i in listing["items"] if i["study_instance_uid"] == study_uid]
    assert item["warning"] == "patient-mismatch" and item["accession_request_id"] == view["id"]
    assert item["patient_mismatch"] == ["patient_id", "name"]

    # The same patient, written another way (name in another representation), is linked as usual.
    same = instance(
        "CT_small.dcm", accession=view["accession_number"], patient_id="P0042", patient_name="Zhang^San=张^三"
    )
    same.SpecificCharacterSet = "ISO_IR 192"
    (ok,) = await store(node.port, TOWNSHIP_AE, [same])
    assert ok.Status == 0x0000
    async with client.hub.sessions() as session:
        linked = (
            await session.execute(
                select(DicomStudy.request_id).where(DicomStudy.study_instance_uid == str(same.StudyInstanceUID))
            )
        ).scalar_one()
    assert linked == view["id"]


async def test_a_stow_of_another_patient_is_not_linked_by_its_accession(client: Any) -> None:
    from tests.dicomweb_fixtures import web_for

    view = await ordered(client, modality="CT", patient_id="P0042")  # 张三, M, 1980-01-01
    ds = instance("CT_small.dcm", accession=view["accession_number"], patient_id="P0042", patient_name="王^五")
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientBirthDate, ds.PatientSex = "19800101", "M"
    web = await web_for(client, "township_doc")
    await web.call(lambda c: c.store_instances([ds]))
    async with client.hub.sessions() as session:
        study = (
            await session.execute(select(DicomStudy).where(DicomStudy.study_instance_uid == str(ds.StudyInstanceUID)))
        ).scalar_one()
    assert study.request_id is None, "stored, but waiting for reconciliation: the name contradicts the order's"
    listing = await (await client.get("/api/v1/reconciliation", headers=await client.login("county_coord"))).json()
    (item,) = [i for i in listing["items"] if i["study_instance_uid"] == str(ds.StudyInstanceUID)]
    assert item["patient_mismatch"] == ["name"] and item["accession_request_id"] == view["id"]
