"""dcmtk's echoscu, storescu, findscu, getscu and movescu as peers nobody here wrote, against the hub's node
(TCP_NODELAY=1 in their environment, as DESIGN asks for fair timing)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from sqlalchemy import select

from gateways.dicom.waveform import read_ecg
from telenet.config import Settings
from telenet.services.network import load_network
from telenet.store.models import DicomStudy
from tests.conftest import require_tool
from tests.dicom_fixtures import (
    COUNTY_AE,
    OTHER_TOWNSHIP_AE,
    TOWNSHIP_AE,
    chinese_files,
    dicom_settings,
    free_port,
    instance,
    ordered,
    pydicom_file,
    run_tool,
    save,
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return dicom_settings(tmp_path)


def peer(node: Any) -> list[str]:
    return ["-aec", "TELENET", "127.0.0.1", str(node.port)]


async def storescu(node: Any, calling: str, *files: Path | str) -> Any:
    tool = require_tool("storescu")
    return await run_tool([tool, "-aet", calling, *peer(node), *map(str, files)])


async def test_echoscu_needs_a_registered_ae_title(node: Any, caplog: pytest.LogCaptureFixture) -> None:
    tool = require_tool("echoscu")
    with caplog.at_level(logging.WARNING, logger="gateways.dicom.node"):
        refused = await run_tool([tool, "-aet", "UNKNOWN", *peer(node)])
    assert refused.returncode != 0 and "Rejected" in refused.output, refused.output
    assert any("'UNKNOWN' is not registered" in r.getMessage() for r in caplog.records), "the reason is logged"
    accepted = await run_tool([tool, "-aet", TOWNSHIP_AE, *peer(node)])
    assert accepted.returncode == 0, accepted.output


async def test_storescu_stores_pydicom_samples_and_chinese_names(client: Any, node: Any, tmp_path: Path) -> None:
    files = [pydicom_file("CT_small.dcm"), pydicom_file("MR_small.dcm"), *chinese_files(tmp_path).values()]
    result = await storescu(node, TOWNSHIP_AE, *files)
    assert result.returncode == 0, result.output
    async with client.hub.sessions() as session:
        names = set((await session.execute(select(DicomStudy.patient_name))).scalars())
    assert {"张三^", "李^四", "CompressedSamples^CT1"} <= names, names
    again = await storescu(node, TOWNSHIP_AE, pydicom_file("CT_small.dcm"))
    assert again.returncode == 0, "a duplicate is an idempotent success"


def independent_bpm(path: str) -> float:
    """An R-peak count that shares nothing with Pan–Tompkins: lead II in mV, local maxima above 60 % of the
    record's largest deflection and at least 250 ms apart; rate = 60 × (peaks − 1) / (last − first)."""
    wave = read_ecg(pydicom.dcmread(path))
    lead = wave.leads["II"] - np.median(wave.leads["II"])
    threshold = 0.6 * np.max(np.abs(lead))
    sign = 1.0 if np.max(lead) >= -np.min(lead) else -1.0
    x = sign * lead
    gap = int(0.25 * wave.sampling_hz)
    peaks: list[int] = []
    for i in range(1, len(x) - 1):
        if x[i] >= threshold and x[i] >= x[i - 1] and x[i] > x[i + 1]:
            if peaks and i - peaks[-1] < gap:
                if x[i] > x[peaks[-1]]:
                    peaks[-1] = i
                continue
            peaks.append(i)
    return 60.0 * (len(peaks) - 1) / ((peaks[-1] - peaks[0]) / wave.sampling_hz)


async def test_storescu_ecg_queues_the_request_with_a_measured_rate(client: Any, node: Any, tmp_path: Path) -> None:
    view = await ordered(client, kind="ecg", modality="ECG")
    ecg = pydicom.dcmread(pydicom_file("waveform_ecg.dcm"))
    ecg.AccessionNumber = view["accession_number"]
    ecg.PatientID, ecg.PatientBirthDate, ecg.PatientSex = "P0001", "19800101", "M"  # the order's patient
    ecg.PatientName = ""  # the file's "Anonymous" would contradict 张三
    path = save(ecg, tmp_path / "ecg.dcm")
    result = await storescu(node, TOWNSHIP_AE, path)
    assert result.returncode == 0, result.output

    state = await (
        await client.get(f"/api/v1/requests/{view['id']}", headers=await client.login("township_doc"))
    ).json()
    assert state["state"] == "queued" and state["data_completed_by"] == "ecg"
    reader = await client.login("county_reader")
    data = await (await client.get(f"/api/v1/ecg/{ecg.SOPInstanceUID}.json", headers=reader)).json()
    measured = data["suggestion"]["heart_rate_bpm"]
    assert measured == pytest.approx(independent_bpm(str(path)), rel=0.05)
    svg = await client.get(f"/api/v1/ecg/{ecg.SOPInstanceUID}.svg", headers=reader)
    assert svg.status == 200 and b"<svg" in await svg.read()


async def test_findscu_worklist_gives_the_order_with_its_chinese_name(client: Any, node: Any, tmp_path: Path) -> None:
    tool = require_tool("findscu")
    view = await ordered(client, modality="DX", name="张三")
    keys = [
        "-k", "SpecificCharacterSet=ISO_IR 192",
        "-k", "PatientName", "-k", "PatientID", "-k", "AccessionNumber",
        "-k", "ScheduledProcedureStepSequence[0].Modality",
        "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate",
    ]  # fmt: skip
    own, other = tmp_path / "own", tmp_path / "other"
    own.mkdir()
    other.mkdir()
    result = await run_tool([tool, "-W", "-X", "-od", str(own), "-aet", TOWNSHIP_AE, *keys, *peer(node)])
    assert result.returncode == 0, result.output
    (response,) = [pydicom.dcmread(p) for p in sorted(own.glob("rsp*.dcm"))]
    assert str(response.PatientName) == "张三"
    assert response.AccessionNumber == view["accession_number"]
    assert response.ScheduledProcedureStepSequence[0].Modality == "DX"
    scoped = await run_tool([tool, "-W", "-X", "-od", str(other), "-aet", OTHER_TOWNSHIP_AE, *keys, *peer(node)])
    assert scoped.returncode == 0 and not list(other.glob("rsp*.dcm")), "another institution sees nothing"


async def test_query_retrieve_sees_only_studies_routed_to_the_center(
    client: Any, node: Any, tmp_path: Path, demo_doc: dict[str, Any]
) -> None:
    for tool in ("findscu", "getscu", "movescu"):
        require_tool(tool)
    view = await ordered(client, modality="CT")
    routed = save(instance("CT_small.dcm", accession=view["accession_number"]), tmp_path / "routed.dcm")
    foreign = save(instance("MR_small.dcm"), tmp_path / "foreign.dcm")  # another county's township, no order
    assert (await storescu(node, TOWNSHIP_AE, routed)).returncode == 0
    assert (await storescu(node, OTHER_TOWNSHIP_AE, foreign)).returncode == 0
    routed_uid = str(pydicom.dcmread(routed).StudyInstanceUID)
    foreign_uid = str(pydicom.dcmread(foreign).StudyInstanceUID)

    found = tmp_path / "found"
    found.mkdir()
    study_keys = [
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "StudyInstanceUID",
        "-k",
        "PatientName",
        "-k",
        "AccessionNumber",
    ]
    result = await run_tool(
        [require_tool("findscu"), "-S", "-X", "-od", str(found), "-aet", COUNTY_AE, *study_keys, *peer(node)]
    )
    assert result.returncode == 0, result.output
    uids = {str(pydicom.dcmread(p).StudyInstanceUID) for p in found.glob("rsp*.dcm")}
    assert uids == {routed_uid}, "the county workstation sees the study routed to its center, not the other county's"

    got = tmp_path / "got"
    got.mkdir()
    get_keys = ["-k", "QueryRetrieveLevel=STUDY"]
    result = await run_tool(
        [require_tool("getscu"), "-S", "-od", str(got), "-aet", COUNTY_AE, *get_keys,
         "-k", f"StudyInstanceUID={routed_uid}", *peer(node)]
    )  # fmt: skip
    assert result.returncode == 0, result.output
    assert [str(pydicom.dcmread(p).StudyInstanceUID) for p in got.iterdir()] == [routed_uid]
    denied = tmp_path / "denied"
    denied.mkdir()
    await run_tool(
        [require_tool("getscu"), "-S", "-od", str(denied), "-aet", COUNTY_AE, *get_keys,
         "-k", f"StudyInstanceUID={foreign_uid}", *peer(node)]
    )  # fmt: skip
    assert not list(denied.iterdir()), "a study outside the scope is never sent"

    # C-MOVE to the county PACS node registered for NL-C01-K01-IMG, pointed at movescu's own listener.
    port = free_port()
    patched = _with_county_pacs(demo_doc, "127.0.0.1", port)
    await load_network(client.hub, patched)
    moved = tmp_path / "moved"
    moved.mkdir()
    move = [require_tool("movescu"), "-S", "-od", str(moved), "-aet", COUNTY_AE, "-aem", "K01PACS", "+P", str(port)]
    result = await run_tool([*move, *get_keys, "-k", f"StudyInstanceUID={routed_uid}", *peer(node)])
    assert result.returncode == 0, result.output
    assert [str(pydicom.dcmread(p).StudyInstanceUID) for p in moved.iterdir()] == [routed_uid]
    nowhere = [require_tool("movescu"), "-S", "-aet", COUNTY_AE, "-aem", "NOWHERE", *get_keys]
    result = await run_tool([*nowhere, "-k", f"StudyInstanceUID={routed_uid}", *peer(node)])
    assert result.returncode != 0 and "MoveDestinationUnknown" in result.output, result.output


def _with_county_pacs(doc: dict[str, Any], host: str, port: int) -> dict[str, Any]:
    import copy

    patched = copy.deepcopy(doc)
    for center in patched["centers"]:
        if center["code"] == "NL-C01-K01-IMG":
            center["dicom_node"] = {"ae_title": "K01PACS", "host": host, "port": port}
    return patched
