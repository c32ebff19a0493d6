"""Who sees what over DICOMweb, on both engines: one table of roles × endpoints (QIDO, WADO, STOW, rendered).
The study is sent by the township clinic for its request, which sits at the county imaging center."""

from __future__ import annotations

import io
from typing import Any

import pytest
from pydicom.filebase import DicomBytesIO

from tests.dicom_fixtures import instance, ordered
from tests.dicomweb_fixtures import study, web_for

# user: (finds it over QIDO, WADO status, rendered status, STOW status of a new instance of that study)
TABLE = [
    ("township_doc", "clinic, own", True, 200, 200, 200),
    ("township_doc2", "clinic of another county", False, 404, 404, 409),
    ("county_reader", "reader, the request's center", True, 200, 200, 403),
    ("city_reader", "reader, another center", False, 404, 404, 403),
    ("county_coord", "coordinator of the center", True, 200, 200, 403),
    ("city_coord", "coordinator above", True, 200, 200, 403),
    ("province_admin", "admin of the province, no stated reason (aggregates only)", False, 404, 404, 403),
    ("his_t01", "integration account of the clinic", True, 200, 200, 200),
]


def part10(ds: Any) -> bytes:
    buffer = DicomBytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return bytes(buffer.getvalue())


def multipart(*files: bytes, boundary: str = "b0undary") -> tuple[bytes, dict[str, str]]:
    body = io.BytesIO()
    for data in files:
        body.write(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        body.write(data + b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return body.getvalue(), {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'}


@pytest.fixture
async def routed(client: Any) -> dict[str, Any]:
    view = await ordered(client, modality="CT")
    assert view["center"]["code"] == "NL-C01-K01-IMG"
    dss = study(2, accession=view["accession_number"], patient_name="Zhang^San=张^三", charset="ISO_IR 192")
    web = await web_for(client, "township_doc")
    await web.call(lambda c: c.store_instances(dss))
    return {"ds": dss[0], "request": view}


async def test_roles_by_endpoint(client: Any, routed: dict[str, Any]) -> None:
    """Each row of the table in turn, on one hub (a study stored by an allowed STOW-RS counts for the next)."""
    ds = routed["ds"]
    study_url = f"/dicom-web/studies/{ds.StudyInstanceUID}"
    instance_url = f"{study_url}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    expected_instances = 2
    for user, who, finds, wado, rendered, stow in TABLE:
        headers = await client.login(user)
        found = await client.get("/dicom-web/studies", headers=headers)
        assert found.status == 200, who
        assert ([item["0020000D"]["Value"][0] for item in await found.json()] == [ds.StudyInstanceUID]) is finds, who
        by_uid = await client.get(f"/dicom-web/studies?StudyInstanceUID={ds.StudyInstanceUID}", headers=headers)
        assert (len(await by_uid.json()) == 1) is finds, who
        series = await client.get(f"{study_url}/series", headers=headers)
        assert series.status == (200 if finds else 404), who

        for url in (study_url, f"{study_url}/metadata", instance_url, f"{instance_url}/frames/1"):
            got = await client.get(url, headers={**headers, "Accept": "*/*"})
            assert got.status == wado, f"{who}: {url}"
        picture = await client.get(f"{instance_url}/rendered", headers=headers)
        assert picture.status == rendered, who
        thumbnail = await client.get(f"{study_url}/thumbnail", headers=headers)
        assert thumbnail.status == rendered, who
        if rendered == 404:
            assert (await picture.json())["type"].endswith("no-study"), "problem JSON, existence not told"

        extra = instance("CT_small.dcm", study_uid=ds.StudyInstanceUID, series_uid=ds.SeriesInstanceUID)
        body, content_type = multipart(part10(extra))
        stored = await client.post(study_url, data=body, headers={**headers, **content_type})
        assert stored.status == stow, f"{who}: {await stored.text()}"
        if stow == 409:
            failed = (await stored.json())["00081198"]["Value"][0]
            assert failed["00081197"]["Value"] == [0x0124], "refused: not authorised"
        expected_instances += stow == 200
        after = await client.get(f"{study_url}/instances", headers=await client.login("township_doc"))
        assert len(await after.json()) == expected_instances, who

    # Break-glass: with a stated reason the province's admin sees the study (and the reason is audited).
    glass = {**await client.login("province_admin"), "X-Break-Glass-Reason": "%E8%B4%A8%E6%8E%A7%E6%8A%BD%E6%9F%A5"}
    found = await client.get(f"/dicom-web/studies?StudyInstanceUID={ds.StudyInstanceUID}", headers=glass)
    assert len(await found.json()) == 1, "an admin with a stated reason finds the study"
    assert (await client.get(f"{study_url}/metadata", headers=glass)).status == 200


async def test_no_token_in_the_url(client: Any) -> None:
    token = (await client.login("township_doc"))["Authorization"].removeprefix("Bearer ")
    for query in (f"access_token={token}", f"token={token}"):
        resp = await client.get(f"/dicom-web/studies?{query}")
        assert resp.status == 401
        assert resp.content_type == "application/problem+json"
