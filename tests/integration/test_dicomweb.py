"""DICOMweb against a real hub on loopback with dicomweb-client (PyPI) as the client, on both engines:
STOW-RS into the C-STORE path, QIDO-RS with every matching key, WADO-RS retrieve, metadata with BulkDataURI,
frames, bulk data, rendered and thumbnail (an ECG too), a Chinese name round trip, per-study audit."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from sqlalchemy import select

from telenet.services import study_links
from telenet.store.models import AuditEntry, DicomStudy
from tests.dicom_fixtures import instance, ordered
from tests.dicomweb_fixtures import Web, study, web_for

CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture
async def stored(client: Any) -> dict[str, Any]:
    """Study A: 3 CT instances of 张三 (Zhang^San=张^三) with the accession of an ordered request; study B: one
    MR of 李四. Stored by the township clinic over STOW-RS."""
    view = await ordered(client, modality="CT")
    a = study(3, accession=view["accession_number"], patient_name="Zhang^San=张^三", charset="ISO_IR 192")
    for ds in a:
        ds.PatientID, ds.StudyDate = "P0001", "20260301"
    b = study(1, source="MR_small.dcm", patient_name="Li^Si=李^四", charset="ISO_IR 192", patient_id="P0002")
    b[0].StudyDate = "20260215"
    web = await web_for(client, "township_doc")
    answer = await web.call(lambda c: c.store_instances(a + b))
    return {"a": a, "b": b, "request": view, "web": web, "answer": answer}


def uids(found: list[dict[str, Any]], tag: str = "0020000D") -> list[str]:
    return [item[tag]["Value"][0] for item in found]


async def test_store_answers_the_ps3_18_response_and_matches_by_accession(client: Any, stored: dict[str, Any]) -> None:
    answer = stored["answer"]
    referenced = answer.ReferencedSOPSequence
    assert [r.ReferencedSOPInstanceUID for r in referenced] == [ds.SOPInstanceUID for ds in stored["a"] + stored["b"]]
    assert all(r.ReferencedSOPClassUID for r in referenced) and "FailedSOPSequence" not in answer
    async with client.hub.sessions() as session:
        row = (
            await session.execute(
                select(DicomStudy).where(DicomStudy.study_instance_uid == stored["a"][0].StudyInstanceUID)
            )
        ).scalar_one()
    assert (row.request_id, row.matched_by, row.instance_count) == (stored["request"]["id"], "accession", 3)


async def test_stow_completes_the_request_by_quiet_time_as_c_store_does(
    client: Any, stored: dict[str, Any], clock: Any
) -> None:
    clock.advance(seconds=client.hub.options.study_quiet_seconds + 1)
    assert await study_links.complete_quiet_studies(client.hub) == 1
    resp = await client.get(f"/api/v1/requests/{stored['request']['id']}", headers=await client.login("township_doc"))
    view = await resp.json()
    assert (view["state"], view["data_completed_by"]) == ("queued", "quiet-time")


async def test_search_studies_by_every_key(stored: dict[str, Any]) -> None:
    web: Web = stored["web"]
    a, b = stored["a"][0].StudyInstanceUID, stored["b"][0].StudyInstanceUID

    async def find(**filters: Any) -> list[str]:
        return uids(await web.call(lambda c: c.search_for_studies(search_filters=filters)))

    assert await find() == [a, b]
    assert await find(PatientName="张*") == [a]
    assert await find(PatientName="zhang^san") == [a], "PN matching ignores case"
    assert await find(PatientName="Zhang^San") == [a], "one component group matches"
    assert await find(PatientName="L?^Si") == [b]
    assert await find(PatientName="Wang*") == []
    assert await find(PatientID="P0001") == [a]
    assert await find(PatientID="P000*") == [a, b]
    assert await find(AccessionNumber=stored["request"]["accession_number"]) == [a]
    assert await find(StudyDate="20260215") == [b]
    assert await find(StudyDate="20260220-") == [a]
    assert await find(StudyDate="-20260220") == [b]
    assert await find(StudyDate="20260101-20261231") == [a, b]
    assert await find(StudyDescription="e+1") == [a], "CT_small's description"
    assert await find(StudyDescription="x*") == []
    assert await find(ModalitiesInStudy="CT") == [a]
    assert await find(ModalitiesInStudy="MR") == [b]
    assert await find(ModalitiesInStudy="CT,MR") == [a, b]
    assert await find(ModalitiesInStudy="US") == []
    assert await find(StudyInstanceUID=[a, b]) == [a, b]
    assert await find(StudyInstanceUID=b) == [b]
    paged = await web.call(lambda c: c.search_for_studies(limit=1, offset=1))
    assert uids(paged) == [b]
    fuzzy = await web.call(lambda c: c.search_for_studies(fuzzymatching=True, search_filters={"PatientID": "P0002"}))
    assert uids(fuzzy) == [b]


async def test_chinese_name_round_trips_with_its_component_groups(stored: dict[str, Any]) -> None:
    web: Web = stored["web"]
    found = await web.call(lambda c: c.search_for_studies(search_filters={"PatientID": "P0001"}))
    assert found[0]["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Zhang^San", "Ideographic": "张^三"}]}
    assert found[0]["00080005"]["Value"] == ["ISO_IR 192"]
    retrieved = await web.call(lambda c: c.retrieve_study(stored["a"][0].StudyInstanceUID))
    assert sorted(ds.SOPInstanceUID for ds in retrieved) == sorted(ds.SOPInstanceUID for ds in stored["a"])
    assert {str(ds.PatientName) for ds in retrieved} == {"Zhang^San=张^三"}


async def test_search_series_and_instances(stored: dict[str, Any]) -> None:
    web: Web = stored["web"]
    a, b = stored["a"][0], stored["b"][0]
    series = await web.call(lambda c: c.search_for_series(a.StudyInstanceUID))
    assert uids(series, "0020000E") == [a.SeriesInstanceUID]
    assert series[0]["00201209"]["Value"] == [3] and "00100010" not in series[0]
    with_study = await web.call(lambda c: c.search_for_series(a.StudyInstanceUID, fields=["00080020", "PatientID"]))
    assert with_study[0]["00080020"]["Value"] == ["20260301"] and with_study[0]["00100020"]["Value"] == ["P0001"]
    everything = await web.call(lambda c: c.search_for_series(search_filters={"Modality": "MR"}, fields=["all"]))
    assert uids(everything, "0020000E") == [b.SeriesInstanceUID]
    assert everything[0]["00100010"]["Value"][0]["Ideographic"] == "李^四"
    by_uid = await web.call(lambda c: c.search_for_series(search_filters={"SeriesInstanceUID": a.SeriesInstanceUID}))
    assert uids(by_uid, "0020000E") == [a.SeriesInstanceUID]
    instances = await web.call(lambda c: c.search_for_instances(a.StudyInstanceUID, a.SeriesInstanceUID))
    assert sorted(uids(instances, "00080018")) == sorted(ds.SOPInstanceUID for ds in stored["a"])
    in_study = await web.call(lambda c: c.search_for_instances(a.StudyInstanceUID))
    assert len(in_study) == 3
    ct = await web.call(lambda c: c.search_for_instances(search_filters={"SOPClassUID": CT}))
    assert sorted(uids(ct, "00080018")) == sorted(ds.SOPInstanceUID for ds in stored["a"])
    one = await web.call(lambda c: c.search_for_instances(search_filters={"SOPInstanceUID": b.SOPInstanceUID}))
    assert uids(one, "00080018") == [b.SOPInstanceUID]


async def test_metadata_bulkdata_and_frames(stored: dict[str, Any]) -> None:
    web: Web = stored["web"]
    a = stored["a"][0]
    metadata = await web.call(lambda c: c.retrieve_study_metadata(a.StudyInstanceUID))
    assert len(metadata) == 3
    mine = next(m for m in metadata if m["00080018"]["Value"] == [a.SOPInstanceUID])
    assert "InlineBinary" not in mine["7FE00010"] and mine["00280010"]["Value"] == [128]
    uri = mine["7FE00010"]["BulkDataURI"]
    assert uri.endswith(f"/instances/{a.SOPInstanceUID}/bulkdata/7fe00010")
    bulk = await web.call(lambda c: c.retrieve_bulkdata(uri))
    assert bulk == [a.PixelData]
    series_meta = await web.call(lambda c: c.retrieve_series_metadata(a.StudyInstanceUID, a.SeriesInstanceUID))
    instance_meta = await web.call(
        lambda c: c.retrieve_instance_metadata(a.StudyInstanceUID, a.SeriesInstanceUID, a.SOPInstanceUID)
    )
    assert len(series_meta) == 3 and instance_meta["00100010"]["Value"][0]["Ideographic"] == "张^三"
    frames = await web.call(
        lambda c: c.retrieve_instance_frames(a.StudyInstanceUID, a.SeriesInstanceUID, a.SOPInstanceUID, [1])
    )
    assert frames == [a.PixelData]
    one = await web.call(lambda c: c.retrieve_instance(a.StudyInstanceUID, a.SeriesInstanceUID, a.SOPInstanceUID))
    assert one.SOPInstanceUID == a.SOPInstanceUID and one.PixelData == a.PixelData
    series = await web.call(lambda c: c.retrieve_series(a.StudyInstanceUID, a.SeriesInstanceUID))
    assert len(series) == 3


async def test_rendered_and_thumbnail(stored: dict[str, Any]) -> None:
    web: Web = stored["web"]
    a = stored["a"][0]
    ids = (a.StudyInstanceUID, a.SeriesInstanceUID, a.SOPInstanceUID)
    jpeg = await web.call(lambda c: c.retrieve_instance_rendered(*ids))
    image = Image.open(io.BytesIO(jpeg))
    assert (image.format, image.size, image.mode) == ("JPEG", (128, 128), "L")
    assert np.asarray(image).std() > 10, "not a blank picture"
    png = await web.call(
        lambda c: c.retrieve_instance_rendered(*ids, media_types=("image/png",), params={"viewport": "64,64"})
    )
    small = Image.open(io.BytesIO(png))
    assert (small.format, small.size) == ("PNG", (64, 64))
    narrow = await web.call(
        lambda c: c.retrieve_instance_rendered(*ids, media_types=("image/png",), params={"window": "100,50"})
    )
    wide = await web.call(
        lambda c: c.retrieve_instance_rendered(*ids, media_types=("image/png",), params={"window": "500,4000"})
    )
    assert np.asarray(Image.open(io.BytesIO(narrow))).std() != np.asarray(Image.open(io.BytesIO(wide))).std()
    frame = await web.call(lambda c: c.retrieve_instance_frames_rendered(*ids, [1], media_types=("image/png",)))
    assert Image.open(io.BytesIO(frame)).size == (128, 128)
    base = f"{web.client.base_url}/studies/{a.StudyInstanceUID}"
    for url in (f"{base}/thumbnail", f"{base}/series/{a.SeriesInstanceUID}/instances/{a.SOPInstanceUID}/thumbnail"):
        resp = await web.call(lambda c, url=url: c._http_get(url, headers={"Accept": "image/jpeg"}))  # type: ignore[misc]
        thumb = Image.open(io.BytesIO(resp.content))
        assert thumb.format == "JPEG" and max(thumb.size) == 128


async def test_ecg_over_stow_is_measured_queued_and_rendered_as_the_twelve_lead_sheet(client: Any) -> None:
    view = await ordered(client, kind="ecg", modality="ECG")
    web = await web_for(client, "township_doc")
    ecg = instance("waveform_ecg.dcm", patient_name="张^三", charset="ISO_IR 192", accession=view["accession_number"])
    await web.call(lambda c: c.store_instances([ecg]))
    state = await (
        await client.get(f"/api/v1/requests/{view['id']}", headers=await client.login("township_doc"))
    ).json()
    assert (state["state"], state["data_completed_by"]) == ("queued", "ecg"), "the C-STORE path: no quiet time"
    measured = await client.get(f"/api/v1/ecg/{ecg.SOPInstanceUID}.json", headers=await client.login("county_reader"))
    assert (await measured.json())["suggestion"]["heart_rate_bpm"], "measured on arrival"
    ids = (ecg.StudyInstanceUID, ecg.SeriesInstanceUID, ecg.SOPInstanceUID)
    png = await web.call(lambda c: c.retrieve_instance_rendered(*ids, media_types=("image/png",)))
    sheet = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert sheet.shape[1] > sheet.shape[0] > 500, "landscape paper"
    reds = np.sum((sheet[..., 0] > 200) & (sheet[..., 1] < 210) & (sheet[..., 2] < 210))
    blacks = np.sum(sheet.max(axis=2) < 60)
    assert reds > 10_000 and blacks > 5_000, "grid and traces drawn"


async def test_every_study_read_is_audited_per_study(client: Any, stored: dict[str, Any]) -> None:
    reader = await web_for(client, "county_reader")
    found = await reader.call(lambda c: c.search_for_studies())
    a = stored["a"][0].StudyInstanceUID
    assert uids(found) == [a], "the MR has no request at the reader's center"
    await reader.call(lambda c: c.retrieve_study_metadata(a))
    async with client.hub.sessions() as session:
        rows = (
            (
                await session.execute(
                    select(AuditEntry)
                    .where(AuditEntry.actor == "county_reader", AuditEntry.object_id == a)
                    .order_by(AuditEntry.id)
                )
            )
            .scalars()
            .all()
        )
    assert [(r.action, r.object_type, r.outcome) for r in rows] == [
        ("dicomweb.search", "dicom_study", "ok"),
        ("dicomweb.metadata", "dicom_study", "ok"),
    ]
    assert all(r.detail and r.detail["patient_id"] == "P0001" and r.remote_addr == "127.0.0.1" for r in rows)


def test_stored_file_is_the_file_sent(tmp_path: Any) -> None:
    """The fixture's instances are Part 10 files as dicomweb-client sends them (a guard on the helper)."""
    ds = study(1)[0]
    ds.save_as(tmp_path / "x.dcm", enforce_file_format=True)
    assert pydicom.dcmread(tmp_path / "x.dcm").SOPInstanceUID == ds.SOPInstanceUID


async def test_matching_happens_in_the_query_not_in_a_capped_list(client: Any) -> None:
    """1,200 studies of the clinic: a key that only the last one has is found, and paging reaches the end."""
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from telenet.store.models import Institution

    async with client.hub.sessions() as session:
        inst = (await session.execute(select(Institution).where(Institution.code == "NL-C01-K01-T01"))).scalar_one()
        now = datetime.now(UTC)
        rows = [
            {
                "study_instance_uid": f"1.2.826.0.1.3680043.8.498.77.{i}",
                "source_institution_id": inst.id,
                "source_path": inst.path,
                "calling_ae": "SEED",
                "patient_id": f"Q{i:05d}",
                "patient_name": f"Seed^{i}",
                "study_date": "20260101",
                "modalities": ["DX"],
                "instance_count": 1,
                "total_bytes": 1,
                "first_received_at": now,
                "last_received_at": now,
                "mpps_waiting": False,
            }
            for i in range(1200)
        ]
        await session.execute(insert(DicomStudy), rows)
        await session.commit()
    web = await web_for(client, "township_doc")
    last = await web.call(lambda c: c.search_for_studies(search_filters={"PatientID": "Q01199"}))
    assert uids(last) == ["1.2.826.0.1.3680043.8.498.77.1199"]
    wild = await web.call(lambda c: c.search_for_studies(search_filters={"PatientName": "seed^119?"}))
    assert uids(wild) == [f"1.2.826.0.1.3680043.8.498.77.{i}" for i in range(1190, 1200)]
    tail = await web.call(lambda c: c.search_for_studies(offset=1190, limit=100))
    assert uids(tail) == [f"1.2.826.0.1.3680043.8.498.77.{i}" for i in range(1190, 1200)]
    outsider = await web_for(client, "township_doc2")
    assert await outsider.call(lambda c: c.search_for_studies(search_filters={"PatientID": "Q01199"})) == []


async def test_frames_of_multi_frame_and_compressed_instances(client: Any) -> None:
    """Native frames are byte ranges of the file; encapsulated frames come as stored with
    ``transfer-syntax=*`` (406 otherwise) and still render."""
    from pydicom.encaps import generate_frames

    web = await web_for(client, "township_doc")
    native = instance("CT_small.dcm")
    ramp = np.tile(np.arange(128, dtype=np.int16) * 8, (128, 1))
    pixels = np.stack([ramp, ramp.T, ramp[::-1]])
    native.NumberOfFrames, native.PixelData = 3, pixels.tobytes()
    native.RescaleIntercept, native.RescaleSlope = 0, 1
    rle = instance("SC_rgb_rle_2frame.dcm")
    jpeg = instance("SC_rgb_jpeg_dcmtk.dcm")
    await web.call(lambda c: c.store_instances([native, rle, jpeg]))

    def ids(ds: Any) -> tuple[str, str, str]:
        return ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID

    frames = await web.call(lambda c: c.retrieve_instance_frames(*ids(native), [3, 1]))
    assert frames == [pixels[2].tobytes(), pixels[0].tobytes()]
    rendered = [
        np.asarray(
            Image.open(
                io.BytesIO(
                    await web.call(
                        lambda c, n=n: c.retrieve_instance_frames_rendered(  # type: ignore[misc]
                            *ids(native), [n], media_types=("image/png",), params={"window": "512,1024"}
                        )
                    )
                )
            )
        )
        for n in (1, 2)
    ]
    assert rendered[0][0, 0] < rendered[0][0, 127] and rendered[1][0, 0] < rendered[1][127, 0], "each its own frame"
    stored = list(generate_frames(rle.PixelData, number_of_frames=2))
    as_stored = (("application/octet-stream", "*"),)
    got = await web.call(lambda c: c.retrieve_instance_frames(*ids(rle), [2, 1], media_types=as_stored))
    assert got == [stored[1], stored[0]]
    url = f"/dicom-web/studies/{rle.StudyInstanceUID}/series/{rle.SeriesInstanceUID}/instances/{rle.SOPInstanceUID}"
    headers = await client.login("township_doc")
    refused = await client.get(
        f"{url}/frames/1", headers={**headers, "Accept": 'multipart/related; type="application/octet-stream"'}
    )
    assert refused.status == 406
    picture = Image.open(io.BytesIO(await web.call(lambda c: c.retrieve_instance_rendered(*ids(jpeg)))))
    assert (picture.mode, picture.size) == ("RGB", (100, 100)) and np.asarray(picture).std() > 10
