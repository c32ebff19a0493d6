"""STOW-RS and C-STORE are one store path: instances of one study arriving both ways land in one study, a
duplicate across the two protocols is idempotent, and both are retrieved over WADO-RS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from telenet.config import Settings
from tests.dicom_fixtures import TOWNSHIP_AE, dicom_settings
from tests.dicomweb_fixtures import study, web_for
from tests.integration.test_dicom_node import store


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return dicom_settings(tmp_path)


async def test_one_study_by_both_protocols(client: Any, node: Any) -> None:
    dss = study(3, patient_name="Zhang^San=张^三", charset="ISO_IR 192")
    statuses = await store(node.port, TOWNSHIP_AE, dss[:2])
    assert [int(s.Status) for s in statuses] == [0, 0]
    web = await web_for(client, "township_doc")
    answer = await web.call(lambda c: c.store_instances([dss[1], dss[2]]))
    assert [r.ReferencedSOPInstanceUID for r in answer.ReferencedSOPSequence] == [
        dss[1].SOPInstanceUID,
        dss[2].SOPInstanceUID,
    ]
    found = await web.call(lambda c: c.search_for_studies(search_filters={"StudyInstanceUID": dss[0].StudyInstanceUID}))
    assert found[0]["00201208"]["Value"] == [3], "the duplicate counted once"
    retrieved = await web.call(lambda c: c.retrieve_study(dss[0].StudyInstanceUID))
    assert sorted(ds.SOPInstanceUID for ds in retrieved) == sorted(ds.SOPInstanceUID for ds in dss)
    again = await store(node.port, TOWNSHIP_AE, [dss[2]])
    assert int(again[0].Status) == 0, "a C-STORE of what STOW-RS stored is a duplicate too"
    after = await web.call(lambda c: c.search_for_instances(dss[0].StudyInstanceUID))
    assert len(after) == 3
