"""Bad input over DICOMweb gets a clear answer and leaves nothing behind: problem JSON with 400/401/404/406/
413/415, STOW-RS failure codes per instance (0xC000, 0xA900, 0x0122, 0xC122) with 409/202."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from telenet.config import Settings
from telenet.store.models import DicomInstance
from tests.dicom_fixtures import instance, large_instance
from tests.dicomweb_fixtures import study
from tests.integration.test_dicomweb_scope import multipart, part10

LIMIT = 200_000


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        var_dir=str(tmp_path / "var"),
        secret="test-secret-not-for-production",
        dicom_enabled=False,
        hl7_enabled=False,
        dicomweb_max_instance_bytes=LIMIT,
    )


async def instances(client: Any) -> int:
    async with client.hub.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(DicomInstance))).scalar_one())


def leftovers(settings: Settings) -> list[Path]:
    """Files in the store other than directories: after a refused body there are none at all."""
    return [p for p in settings.resolved_dicom_storage_dir.rglob("*") if p.is_file()]


async def problem(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    body: dict[str, Any] = await resp.json()
    assert body["type"] == f"urn:telenet:problem:{code}", body
    return body


async def post(client: Any, url: str, body: bytes, content_type: dict[str, str], user: str = "township_doc") -> Any:
    return await client.post(url, data=body, headers={**await client.login(user), **content_type})


async def test_refused_bodies_store_nothing(client: Any, settings: Settings, tmp_path: Path) -> None:
    """415 wrong content type, 400 malformed multipart, 413 an instance over the limit, 403 a role that may
    not store: each answered with problem JSON, and not one file or index row is left."""
    small = part10(instance())
    body, content_type = multipart(small)
    url = "/dicom-web/studies"
    await problem(await post(client, url, body, {"Content-Type": "application/dicom"}), 415, "unsupported-media-type")
    json_parts = {"Content-Type": 'multipart/related; type="application/dicom+json"; boundary=b0undary'}
    await problem(await post(client, url, body, json_parts), 415, "unsupported-media-type")

    truncated = body[: len(body) // 2]
    assert (await post(client, url, truncated, content_type)).status == 400
    await problem(await post(client, url, b"no boundary here", content_type), 400, "bad-multipart")
    no_boundary = {"Content-Type": 'multipart/related; type="application/dicom"'}
    await problem(await post(client, url, body, no_boundary), 400, "bad-multipart")

    big = large_instance(tmp_path / "big.dcm", megabytes=0.3).read_bytes()
    assert len(big) > LIMIT > len(small)
    too_big, content_type = multipart(small, big)
    await problem(await post(client, url, too_big, content_type), 413, "instance-too-large")

    await problem(await post(client, url, body, content_type, user="county_reader"), 403, "role")
    assert await instances(client) == 0 and leftovers(settings) == []


async def test_failure_reasons_per_instance(client: Any, settings: Settings) -> None:
    good = instance()
    unknown_class = instance()
    unknown_class.SOPClassUID = unknown_class.file_meta.MediaStorageSOPClassUID = "1.2.3.4.5"
    deflated = instance()
    deflated.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1.99"
    no_series = instance()
    del no_series.SeriesInstanceUID
    body, content_type = multipart(
        part10(good), b"this is not DICOM", part10(unknown_class), part10(deflated), part10(no_series)
    )
    resp = await post(client, "/dicom-web/studies", body, content_type)
    assert resp.status == 202, await resp.text()
    answer = await resp.json()
    assert [i["00081155"]["Value"][0] for i in answer["00081199"]["Value"]] == [good.SOPInstanceUID]
    reasons = [i["00081197"]["Value"][0] for i in answer["00081198"]["Value"]]
    assert reasons == [0xC000, 0x0122, 0xC122, 0xC000]
    assert await instances(client) == 1
    assert [p.name for p in leftovers(settings)] == [f"{good.SOPInstanceUID}.dcm"], "failed parts leave no file"


async def test_study_mismatch_is_409_with_0xa900(client: Any, settings: Settings) -> None:
    dss = study(2)
    other = "1.2.826.0.1.3680043.8.498.999"
    body, content_type = multipart(*(part10(ds) for ds in dss))
    resp = await post(client, f"/dicom-web/studies/{other}", body, content_type)
    assert resp.status == 409, await resp.text()
    answer = await resp.json()
    assert [i["00081197"]["Value"][0] for i in answer["00081198"]["Value"]] == [0xA900, 0xA900]
    assert "00081199" not in answer and await instances(client) == 0 and leftovers(settings) == []


async def test_bad_queries_and_unknown_resources(client: Any) -> None:
    headers = await client.login("township_doc")
    ds = study(1)[0]
    body, content_type = multipart(part10(ds))
    assert (await post(client, "/dicom-web/studies", body, content_type)).status == 200
    base = f"/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"

    async def get(url: str, accept: str = "*/*") -> Any:
        return await client.get(url, headers={**headers, "Accept": accept})

    await problem(await get("/dicom-web/studies?StudyDate=2026-03-01"), 400, "bad-date")
    await problem(await get("/dicom-web/studies?limit=-1"), 400, "bad-parameter")
    await problem(await get("/dicom-web/studies?limit="), 400, "bad-parameter")  # empty is not an integer
    await problem(await get("/dicom-web/series?offset=x"), 400, "bad-parameter")
    await problem(await get("/dicom-web/studies?NoSuchAttribute=1"), 400, "bad-parameter")
    await problem(await get("/dicom-web/studies?includefield=Nonsense"), 400, "bad-parameter")
    await problem(await get("/dicom-web/studies/not-a-uid/metadata"), 400, "bad-uid")
    await problem(await get(f"{base}/frames/a"), 400, "bad-frame-list")
    await problem(await get(f"{base}/frames/0"), 400, "bad-frame-list")
    await problem(await get(f"{base}/rendered?window=1"), 400, "bad-parameter")
    await problem(await get(f"{base}/rendered?viewport=0,10"), 400, "bad-parameter")
    await problem(await get("/dicom-web/studies/1.2.3.4"), 404, "no-study")
    await problem(await get("/dicom-web/studies/1.2.3.4/series"), 404, "no-study")
    await problem(await get(f"/dicom-web/studies/{ds.StudyInstanceUID}/series/1.2.3/metadata"), 404, "no-instance")
    await problem(await get(f"{base}/frames/2"), 404, "no-frame")
    await problem(await get(f"{base}/bulkdata/00100010"), 404, "no-bulkdata")
    await problem(await get("/dicom-web/studies", "application/dicom+xml"), 406, "not-acceptable")
    await problem(await get(f"{base}/rendered", "image/gif"), 406, "not-acceptable")
    jpeg_only = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50'
    await problem(await get(f"/dicom-web/studies/{ds.StudyInstanceUID}", jpeg_only), 406, "not-acceptable")
    ignored = await get("/dicom-web/studies?StudyTime=1000")
    assert ignored.status == 200 and "StudyTime" in ignored.headers["Warning"]
    assert (await client.get("/dicom-web/studies")).status == 401


async def test_retrieve_in_explicit_little_endian_by_default(client: Any) -> None:
    """A file stored Implicit VR Little Endian is sent re-encoded when no transfer syntax is asked for, and as
    stored with ``transfer-syntax=*``."""
    ds = instance()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"
    body, content_type = multipart(part10(ds))
    assert (await post(client, "/dicom-web/studies", body, content_type)).status == 200
    headers = await client.login("township_doc")
    url = f"/dicom-web/studies/{ds.StudyInstanceUID}"
    default = await client.get(url, headers={**headers, "Accept": 'multipart/related; type="application/dicom"'})
    assert b"transfer-syntax=1.2.840.10008.1.2.1\r\n" in await default.read()
    stored = await client.get(
        url, headers={**headers, "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    )
    assert b"transfer-syntax=1.2.840.10008.1.2\r\n" in await stored.read()


async def test_a_retrieve_is_sent_whole_with_its_length_or_refused_before_the_first_byte(client: Any) -> None:
    """A study retrieve declares its Content-Length and sends every file as stored (sendfile), each part
    byte for byte; when a stored file is gone the answer is a problem before any part is sent."""
    series = study(3, patient_id="P-LEN")
    body, content_type = multipart(*(part10(ds) for ds in series))
    assert (await post(client, "/dicom-web/studies", body, content_type)).status == 200
    headers = await client.login("township_doc")
    url = f"/dicom-web/studies/{series[0].StudyInstanceUID}"
    accept = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    resp = await client.get(url, headers={**headers, **accept})
    data = await resp.read()
    assert resp.status == 200 and int(resp.headers["Content-Length"]) == len(data)
    async with client.hub.reader() as session:
        paths = (await session.execute(select(DicomInstance.path).order_by(DicomInstance.id))).scalars().all()
    stored = await asyncio.to_thread(lambda: [Path(path).read_bytes() for path in paths])
    assert all(file in data for file in stored), "each part is the stored file, byte for byte"
    assert data.endswith(b"--\r\n") and data.count(b"Content-Location: ") == 3

    await asyncio.to_thread(Path(paths[1]).unlink)
    await problem(await client.get(url, headers={**headers, **accept}), 500, "stored-file-missing")
