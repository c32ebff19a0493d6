"""A study whose patient contradicts the request's is never attached to it silently: the reconciliation link
is refused unless a coordinator confirms with a reason (audited), and an MPPS naming the request's accession
with another patient does not link its study."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateways.dicom.modality_sim import ModalitySim
from telenet.config import Settings
from telenet.store.models import AuditEntry, DicomStudy, Mpps
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
