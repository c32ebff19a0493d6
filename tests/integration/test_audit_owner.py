"""The audit answers "who saw this patient": a live delivery of clinical text, each C-GET and C-MOVE and each
WADO-RS retrieval is filed under the institution that owns the data (the township clinic) as well as the
reader's, and a refused attempt where the victim's admins see it. Each row is found by the owner's admin
through ``GET /api/v1/audit?institution=<owner>`` (the readers are outside the owner's subtree, so only the
owner's filing finds them)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.presentation import build_role
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from sqlalchemy import update

from telenet.api.ws import BROKER
from telenet.config import Settings
from telenet.services import critical
from telenet.services.auth import actor_for_username
from telenet.store.models import Center
from tests.dicom_fixtures import COUNTY_AE, OTHER_TOWNSHIP_AE, TOWNSHIP_AE, dicom_settings, instance, ordered
from tests.integration.surface_dicom import StorageSCP
from tests.integration.test_critical_when_found import claimed_by
from tests.integration.test_dicom_node import store
from tests.integration.test_websocket import live_ws, recv_until, subscribe, token_of

TOWNSHIP, OTHER = "NL-C01-K01-T01", "NL-C02-K01-T03"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return dicom_settings(tmp_path)


async def filed_under(client: Any, institution: str, action: str, admin: str = "county_admin") -> list[dict[str, Any]]:
    resp = await client.get(
        "/api/v1/audit", params={"institution": institution, "action": action}, headers=await client.login(admin)
    )
    assert resp.status == 200, await resp.text()
    items: list[dict[str, Any]] = (await resp.json())["items"]
    return items


async def test_a_critical_finding_delivered_live_is_filed_under_the_patients_institution(client: Any) -> None:
    view = await claimed_by(client.hub, "county_reader")
    async with live_ws(client, await token_of(client, "county_reader")) as ws:
        await subscribe(ws, [f"request:{view['id']}"])
        reader = await actor_for_username(client.hub, "county_reader")
        await critical.raise_from_claim(client.hub, reader, view["id"], {"items": ["张力性气胸"]})
        event = await recv_until(ws, "critical.raised")
    await client.app[BROKER].audit.drain()
    rows = await filed_under(client, TOWNSHIP, "events.deliver")
    assert [(r["actor"], r["object_id"], r["detail"]["name"], r["detail"]["request_id"]) for r in rows] == [
        ("county_reader", str(event["id"]), "critical.raised", view["id"])
    ]


def c_get(port: int, calling: str, study_uid: str) -> int:
    """C-GET one study; how many instances arrived."""
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ae = AE(ae_title=calling)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(
        "127.0.0.1",
        port,
        ae_title="TELENET",
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    try:
        list(assoc.send_c_get(_study(study_uid), StudyRootQueryRetrieveInformationModelGet))
    finally:
        assoc.release()
    return len(received)


def c_move(port: int, calling: str, study_uid: str, destination: str) -> list[int]:
    ae = AE(ae_title=calling)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", port, ae_title="TELENET")
    assert assoc.is_established
    try:
        return [
            int(getattr(status, "Status", -1))
            for status, _ in assoc.send_c_move(
                _study(study_uid), destination, StudyRootQueryRetrieveInformationModelMove
            )
        ]
    finally:
        assoc.release()


def _study(uid: str) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = uid
    return query


async def test_dicom_and_dicomweb_retrievals_are_filed_under_the_owner(client: Any, node: Any) -> None:
    view = await ordered(client, modality="CT")  # the township's request, read at the county imaging center
    own = instance("CT_small.dcm", accession=view["accession_number"])
    theirs = instance("CT_small.dcm")  # another county's clinic, not linked to anything of ours
    await store(node.port, TOWNSHIP_AE, [own])
    await store(node.port, OTHER_TOWNSHIP_AE, [theirs])
    own_uid, their_uid = str(own.StudyInstanceUID), str(theirs.StudyInstanceUID)

    # C-GET by the county's workstation AE: its center's study is sent, the other county's study is not.
    assert await asyncio.to_thread(c_get, node.port, COUNTY_AE, own_uid) == 1
    assert await asyncio.to_thread(c_get, node.port, COUNTY_AE, their_uid) == 0
    got = await filed_under(client, TOWNSHIP, "dicom.get")
    assert [(r["actor"], r["object_id"], r["outcome"]) for r in got if r["object_id"]] == [
        ("dicom:" + COUNTY_AE, own_uid, "ok")
    ]
    refused = await filed_under(client, OTHER, "dicom.get", admin="province_admin")
    assert [(r["actor"], r["object_id"], r["outcome"]) for r in refused if r["object_id"]] == [
        ("dicom:" + COUNTY_AE, their_uid, "scope")
    ]

    # C-MOVE to the county center's PACS.
    pacs = StorageSCP("K01PACS")
    pacs_port = await asyncio.to_thread(pacs.start)
    try:
        async with client.hub.sessions() as session:
            await session.execute(
                update(Center)
                .where(Center.dicom_ae_title == "K01PACS")
                .values(dicom_host="127.0.0.1", dicom_port=pacs_port)
            )
            await session.commit()
        statuses = await asyncio.to_thread(c_move, node.port, COUNTY_AE, own_uid, "K01PACS")
    finally:
        await asyncio.to_thread(pacs.stop)
    assert statuses[-1] == 0x0000 and str(own.SOPInstanceUID) in pacs.received
    moved = await filed_under(client, TOWNSHIP, "dicom.move")
    assert [(r["actor"], r["object_id"], r["detail"]["destination"]) for r in moved if r["object_id"]] == [
        ("dicom:" + COUNTY_AE, own_uid, "K01PACS")
    ]

    # WADO-RS: the county reader's retrieval, and a clinic of another county trying (404, existence not told).
    url = f"/dicom-web/studies/{own_uid}/metadata"
    assert (await client.get(url, headers=await client.login("county_reader"))).status == 200
    assert (await client.get(url, headers=await client.login("township_doc2"))).status == 404
    wado = await filed_under(client, TOWNSHIP, "dicomweb.metadata")
    assert sorted((r["actor"], r["object_id"], r["outcome"]) for r in wado) == [
        ("county_reader", own_uid, "ok"),
        ("township_doc2", own_uid, "no-study"),
    ]
