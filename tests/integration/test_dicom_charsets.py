"""Character sets per peer over real DICOM associations: worklist and study-root C-FIND answers go out in
the set the query names, else in the set registered for the calling AE's institution (UTF-8, GB18030,
GBK); the bytes on the wire are that set's, and pydicom on the other side reads the Chinese name back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pynetdicom import AE, build_context
from pynetdicom.sop_class import ModalityWorklistInformationFind
from sqlalchemy import update

from gateways.dicom.mapping import answer_charset
from telenet.config import Settings
from telenet.store.models import Institution
from tests.dicom_fixtures import TOWNSHIP_AE, dicom_settings, ordered

NAME = "张三丰"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return dicom_settings(tmp_path)


def worklist_find(port: int, query_charset: str | None) -> list[Dataset]:
    query = Dataset()
    if query_charset:
        query.SpecificCharacterSet = query_charset
    query.PatientName = ""
    query.PatientID = ""
    query.AccessionNumber = ""
    step = Dataset()
    step.Modality = ""
    step.ScheduledStationAETitle = TOWNSHIP_AE
    query.ScheduledProcedureStepSequence = DicomSequence([step])
    ae = AE(ae_title=TOWNSHIP_AE)
    ae.requested_contexts = [build_context(ModalityWorklistInformationFind)]
    assoc = ae.associate("127.0.0.1", port, ae_title="TELENET")
    assert assoc.is_established
    found = []
    try:
        for status, identifier in assoc.send_c_find(query, ModalityWorklistInformationFind):
            if status and status.Status in (0xFF00, 0xFF01) and identifier is not None:
                found.append(identifier)
    finally:
        assoc.release()
    return found


ROWS = [
    # (registered for the township, the query's SpecificCharacterSet, answer's set, Python codec)
    (None, None, "ISO_IR 192", "utf-8"),
    ("GB18030", None, "GB18030", "gb18030"),
    ("GBK", None, "GBK", "gbk"),
    ("GBK", "GB18030", "GB18030", "gb18030"),  # the query names a set the hub writes: that one
    ("GB18030", "ISO_IR 192", "ISO_IR 192", "utf-8"),
    ("GB18030", "ISO_IR 100", "GB18030", "gb18030"),  # Latin-1 cannot carry the name: the registered set
]


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_worklist_answers_in_the_set_the_modality_understands(client: Any, node: Any) -> None:
    await ordered(client, modality="DX", name=NAME)
    for registered, asked, expected, codec in ROWS:
        async with client.hub.sessions() as session:
            await session.execute(
                update(Institution).where(Institution.code == "NL-C01-K01-T01").values(dicom_charset=registered)
            )
            await session.commit()
        [item] = await asyncio.to_thread(worklist_find, node.port, asked)
        assert item.SpecificCharacterSet == expected, (registered, asked)
        raw = item["PatientName"].value.original_string
        assert raw == NAME.encode(codec), (registered, asked, raw)
        assert str(item.PatientName) == NAME


ANSWER = [
    (None, "UTF-8", "ISO_IR 192"),
    ("GB18030", "UTF-8", "GB18030"),
    ("GBK", "UTF-8", "GBK"),
    (["ISO_IR 100"], "GBK", "GBK"),
    (None, "Latin-9", "ISO_IR 192"),
]


@pytest.mark.parametrize(("asked", "registered", "expected"), ANSWER)
def test_answer_charset(asked: Any, registered: str, expected: str) -> None:
    identifier = Dataset()
    if asked is not None:
        identifier.SpecificCharacterSet = asked
    assert answer_charset(identifier, registered) == expected
