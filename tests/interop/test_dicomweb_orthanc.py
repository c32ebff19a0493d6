"""Orthanc with its DICOMweb plugin (Debian ``orthanc-dicomweb``) configured with the hub as a remote DICOMweb
server (a bearer token in ``HttpHeaders``): it finds a study on the hub over QIDO-RS, retrieves it over WADO-RS
into its own store, and sends another study back over STOW-RS, which the hub indexes like a C-STORE."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path
from typing import Any

from pydicom.filebase import DicomBytesIO
from sqlalchemy import select

from telenet.store.models import DicomStudy
from tests.conftest import missing_peer, require_tool
from tests.dicom_fixtures import instance, ordered
from tests.dicomweb_fixtures import study, web_for
from tests.interop.test_dicom_orthanc import Orthanc

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def dicomweb_orthanc(workdir: Path, hub_url: str, headers: dict[str, str]) -> Orthanc:
    if not PLUGIN.exists():
        missing_peer("the Orthanc DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)")
    workdir.mkdir(parents=True, exist_ok=True)
    server = Orthanc(require_tool("Orthanc"), workdir)
    config = json.loads(server.config.read_text())
    config.update(
        {
            "Plugins": [str(PLUGIN)],
            "DicomWeb": {
                "Enable": True,
                "Root": "/dicom-web/",
                "Servers": {"hub": {"Url": f"{hub_url}/dicom-web/", "HttpHeaders": headers}},
            },
        }
    )
    server.config.write_text(json.dumps(config))
    return server


def call(server: Orthanc, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Any:
    data = raw if raw is not None else json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}", data=data, method=method)
    with urllib.request.urlopen(request, timeout=60) as resp:
        text = resp.read()
    return json.loads(text) if text else None


async def test_orthanc_finds_retrieves_and_stores_over_dicomweb(client: Any, tmp_path: Path) -> None:
    view = await ordered(client, modality="CT")
    dss = study(3, accession=view["accession_number"], patient_name="Zhang^San=张^三", charset="ISO_IR 192")
    for ds in dss:
        ds.PatientID = "P0001"
    web = await web_for(client, "township_doc")
    await web.call(lambda c: c.store_instances(dss))
    hub_url = str(client.make_url("")).rstrip("/")
    orthanc = dicomweb_orthanc(tmp_path / "orthanc", hub_url, await client.login("township_doc"))
    await asyncio.to_thread(orthanc.start)
    try:
        found = await asyncio.to_thread(
            call,
            orthanc,
            "POST",
            "/dicom-web/servers/hub/qido",
            {"Uri": "/studies", "Arguments": {"PatientID": "P0001"}},
        )
        # Orthanc flattens the remote DICOM JSON into its own shape (Name, Value as text)
        assert [item["0020000D"]["Value"] for item in found] == [dss[0].StudyInstanceUID]
        assert found[0]["00100010"]["Value"] == "Zhang^San"  # its flat form keeps the Alphabetic group

        await asyncio.to_thread(
            call,
            orthanc,
            "POST",
            "/dicom-web/servers/hub/retrieve",
            {"Resources": [{"Study": dss[0].StudyInstanceUID}]},
        )
        assert await asyncio.to_thread(orthanc.study_uids) == {dss[0].StudyInstanceUID}
        studies = await asyncio.to_thread(orthanc.get, "/studies?expand")
        assert studies[0]["PatientMainDicomTags"]["PatientName"] == "Zhang^San=张^三"
        assert len(await asyncio.to_thread(orthanc.get, f"/studies/{studies[0]['ID']}/instances")) == 3

        back = instance("MR_small.dcm", patient_name="Li^Si=李^四", charset="ISO_IR 192", patient_id="P0002")
        buffer = DicomBytesIO()
        back.save_as(buffer, enforce_file_format=True)
        uploaded = await asyncio.to_thread(call, orthanc, "POST", "/instances", raw=bytes(buffer.getvalue()))
        await asyncio.to_thread(
            call, orthanc, "POST", "/dicom-web/servers/hub/stow", {"Resources": [uploaded["ParentStudy"]]}
        )
    finally:
        await asyncio.to_thread(orthanc.stop)
    async with client.hub.sessions() as session:
        row = (
            await session.execute(select(DicomStudy).where(DicomStudy.study_instance_uid == back.StudyInstanceUID))
        ).scalar_one()
    assert (row.instance_count, row.patient_name, row.patient_id) == (1, "Li^Si=李^四", "P0002")
    again = await web.call(lambda c: c.search_for_studies(search_filters={"PatientName": "李*"}))
    assert [item["0020000D"]["Value"][0] for item in again] == [back.StudyInstanceUID]
