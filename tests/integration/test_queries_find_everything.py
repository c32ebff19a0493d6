"""Study-root C-FIND, the worklist and C-MOVE/C-GET match in the database query, on both engines: with more
than 1,000 studies (and orders) in scope, the newest are found by any key, by wildcard, by date range, and a
series or instance UID alone retrieves its files."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select

from telenet.services import modality
from telenet.services.auth import actor_for_username
from telenet.services.modality import MAX_MATCHES, StudyQuery, WorklistQuery
from telenet.store.models import DicomInstance, DicomSeries, DicomStudy, Institution, Patient, Request

COUNT = 1_200
TOWNSHIP = "NL-C01-K01-T01"
NAMES = {0: "ZHANG^SAN", 1: "zhang^si", 2: "张三", 3: "张三丰", 4: "王_五", 5: "100%李"}


def name_of(i: int) -> str:
    return NAMES.get(i - (COUNT - 6), f"PATIENT^{i:05d}")


async def fill(hub: Any) -> int:
    """COUNT studies sent by the township (one series, one instance each) and COUNT ordered requests."""
    now = hub.clock.now()
    async with hub.sessions() as session:
        inst = (await session.execute(select(Institution).where(Institution.code == TOWNSHIP))).scalar_one()
        studies = [
            {
                "study_instance_uid": f"1.2.826.0.1.99.{i}",
                "source_institution_id": inst.id,
                "source_path": inst.path,
                "calling_ae": "C01K01T01",
                "accession_number": f"ACC{i:05d}",
                "patient_name": name_of(i),
                "patient_id": f"PID{i:05d}",
                "study_date": f"2025{1 + i // 100 % 12:02d}{1 + i % 28:02d}" if i < COUNT - 6 else "20260301",
                "modalities": ["CT" if i % 2 else "DX"],
                "instance_count": 1,
                "total_bytes": 100,
                "first_received_at": now,
                "last_received_at": now,
                "mpps_waiting": False,
            }
            for i in range(COUNT)
        ]
        await session.execute(insert(DicomStudy), studies)
        ids = dict((await session.execute(select(DicomStudy.study_instance_uid, DicomStudy.id))).all())
        await session.execute(
            insert(DicomSeries),
            [
                {
                    "study_id": ids[f"1.2.826.0.1.99.{i}"],
                    "series_instance_uid": f"1.2.826.0.2.99.{i}",
                    "modality": "CT" if i % 2 else "DX",
                    "instance_count": 1,
                }
                for i in range(COUNT)
            ],
        )
        series = dict((await session.execute(select(DicomSeries.series_instance_uid, DicomSeries.id))).all())
        await session.execute(
            insert(DicomInstance),
            [
                {
                    "study_id": ids[f"1.2.826.0.1.99.{i}"],
                    "series_id": series[f"1.2.826.0.2.99.{i}"],
                    "sop_instance_uid": f"1.2.826.0.3.99.{i}",
                    "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2",
                    "transfer_syntax_uid": "1.2.840.10008.1.2.1",
                    "instance_number": 1,
                    "path": f"/nowhere/{i}.dcm",
                    "size_bytes": 100,
                    "calling_ae": "C01K01T01",
                    "received_at": now,
                }
                for i in range(COUNT)
            ],
        )
        await session.execute(
            insert(Patient),
            [
                {
                    "institution_id": inst.id,
                    "his_id": f"PID{i:05d}",
                    "name": name_of(i),
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(COUNT)
            ],
        )
        patients = dict((await session.execute(select(Patient.his_id, Patient.id))).all())
        center_id = (await session.execute(select(Request.center_id).limit(1))).scalar_one_or_none()
        if center_id is None:
            from telenet.store.models import Center

            center_id = (await session.execute(select(Center.id).where(Center.code == "NL-C01-K01-IMG"))).scalar_one()
        await session.execute(
            insert(Request),
            [
                {
                    "accession_number": f"WL{i:05d}",
                    "kind": "imaging",
                    "modality": "CT" if i % 2 else "DX",
                    "priority": "routine",
                    "priority_rank": 3,
                    "clinical_question": "q",
                    "patient_id": patients[f"PID{i:05d}"],
                    "requesting_institution_id": inst.id,
                    "requesting_path": inst.path,
                    "requester_name": "李青山",
                    "state": "ordered",
                    "center_id": center_id,
                    "ordered_at": now - timedelta(days=COUNT - i),
                    "updated_at": now,
                    "version": 1,
                    "escalations": 0,
                }
                for i in range(COUNT)
            ],
        )
        await session.commit()
    return COUNT


@pytest.fixture
async def full_hub(demo_hub: Any) -> Any:
    await fill(demo_hub)
    return demo_hub


STUDY_KEYS = [
    # (keys, expected PatientIDs: the newest ones, past the first 1,000 rows)
    ({"patient_id": f"PID{COUNT - 1:05d}"}, [f"PID{COUNT - 1:05d}"]),
    ({"accession_number": f"ACC{COUNT - 2:05d}"}, [f"PID{COUNT - 2:05d}"]),
    ({"patient_name": "ZHANG*"}, [f"PID{COUNT - 6:05d}"]),  # case-sensitive: not zhang^si
    ({"patient_name": "zhang?si"}, [f"PID{COUNT - 5:05d}"]),
    ({"patient_name": "张三*"}, [f"PID{COUNT - 3:05d}", f"PID{COUNT - 4:05d}"]),
    ({"patient_name": "张三"}, [f"PID{COUNT - 4:05d}"]),
    ({"patient_name": "王_*"}, [f"PID{COUNT - 2:05d}"]),  # '_' is a character, not a wildcard
    ({"patient_name": "王?五"}, [f"PID{COUNT - 2:05d}"]),
    ({"patient_name": "100%*"}, [f"PID{COUNT - 1:05d}"]),  # '%' too
    ({"patient_name": "*李"}, [f"PID{COUNT - 1:05d}"]),
    ({"date_from": "20260301", "date_to": "20260301", "modality": "CT"}, [f"PID{i:05d}" for i in (1199, 1197, 1195)]),
    ({"patient_name": "NOBODY*"}, []),
]


async def test_study_root_find_matches_in_the_database(full_hub: Any) -> None:
    actor = await actor_for_username(full_hub, "his_t01")
    for keys, expected in STUDY_KEYS:
        found = await modality.find(full_hub, actor, StudyQuery(level="STUDY", **keys))
        assert [f["PatientID"] for f in found] == expected, keys
    everything = await modality.find(full_hub, actor, StudyQuery(level="STUDY"))
    assert len(everything) == MAX_MATCHES and everything[0]["PatientID"] == f"PID{COUNT - 1:05d}"
    series = await modality.find(
        full_hub, actor, StudyQuery(level="SERIES", series_uids=(f"1.2.826.0.2.99.{COUNT - 1}",))
    )
    assert [s["SeriesInstanceUID"] for s in series] == [f"1.2.826.0.2.99.{COUNT - 1}"]
    images = await modality.find(full_hub, actor, StudyQuery(level="IMAGE", sop_uids=(f"1.2.826.0.3.99.{COUNT - 2}",)))
    assert [i["SOPInstanceUID"] for i in images] == [f"1.2.826.0.3.99.{COUNT - 2}"]
    outsider = await actor_for_username(full_hub, "his_k01")
    assert await modality.find(full_hub, outsider, StudyQuery(level="STUDY", patient_id=f"PID{COUNT - 1:05d}")) == []


RETRIEVES = [
    (StudyQuery(level="SERIES", series_uids=(f"1.2.826.0.2.99.{COUNT - 1}",)), [f"1.2.826.0.3.99.{COUNT - 1}"]),
    (StudyQuery(level="IMAGE", sop_uids=(f"1.2.826.0.3.99.{COUNT - 3}",)), [f"1.2.826.0.3.99.{COUNT - 3}"]),
    (StudyQuery(level="STUDY", study_uids=(f"1.2.826.0.1.99.{COUNT - 4}",)), [f"1.2.826.0.3.99.{COUNT - 4}"]),
    (StudyQuery(level="SERIES", series_uids=("1.2.826.0.2.99.0", f"1.2.826.0.2.99.{COUNT - 1}")), None),
]


async def test_move_and_get_by_series_or_instance_uid_alone(full_hub: Any) -> None:
    actor = await actor_for_username(full_hub, "his_t01")
    outsider = await actor_for_username(full_hub, "his_k01")
    for query, expected in RETRIEVES:
        files = await modality.retrieve(full_hub, actor, query)
        want = expected or ["1.2.826.0.3.99.0", f"1.2.826.0.3.99.{COUNT - 1}"]
        assert [f.sop_instance_uid for f in files] == want, query
        assert await modality.retrieve(full_hub, outsider, query) == [], query


WORKLIST_KEYS = [
    ({"patient_id": f"PID{COUNT - 1:05d}"}, [f"WL{COUNT - 1:05d}"]),
    ({"accession_number": f"WL{COUNT - 2:05d}"}, [f"WL{COUNT - 2:05d}"]),
    ({"patient_name": "张三*"}, [f"WL{COUNT - 4:05d}", f"WL{COUNT - 3:05d}"]),
    ({"patient_name": "zhang*"}, [f"WL{COUNT - 5:05d}"]),
    ({"accession_number": "WL0119?", "modality": "CT"}, [f"WL{i:05d}" for i in (1191, 1193, 1195, 1197, 1199)]),
]


async def test_worklist_matches_in_the_database(full_hub: Any) -> None:
    actor = await actor_for_username(full_hub, "his_t01")
    for keys, expected in WORKLIST_KEYS:
        items = await modality.worklist(full_hub, actor, WorklistQuery(**keys))
        assert [i["accession_number"] for i in items] == expected, keys
    day = (full_hub.clock.now() - timedelta(days=1)).strftime("%Y%m%d")
    items = await modality.worklist(full_hub, actor, WorklistQuery(date_from=day, date_to=day))
    assert [i["accession_number"] for i in items] == [f"WL{COUNT - 1:05d}"]
