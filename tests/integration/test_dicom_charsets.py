"""Character sets per peer over real DICOM associations: worklist and study-root C-FIND answers go out in
the set the query names, else in the set registered for the calling AE's institution (UTF-8, GB18030,
GBK); the bytes on the wire are that set's, and pydicom on the other side reads the Chinese name back."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.valuerep import PersonName
from pynetdicom import AE, build_context
from pynetdicom.sop_class import ModalityWorklistInformationFind, StudyRootQueryRetrieveInformationModelFind
from sqlalchemy import select, update

from gateways.dicom.mapping import answer_charset
from telenet.config import Settings
from telenet.services.network import load_network
from telenet.store.models import DicomStudy, Institution
from tests.dicom_fixtures import TOWNSHIP_AE, dicom_settings, instance, ordered

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


def with_charsets(doc: dict[str, Any], institution: str | None, ae: str | None) -> dict[str, Any]:
    """The demo network with the township's DICOM character set and its modality's own set (``ae_charsets``)."""
    patched = copy.deepcopy(doc)
    township = next(i for i in patched["institutions"] if i["code"] == "NL-C01-K01-T01")
    township["dicom_charset"] = institution
    township["ae_charsets"] = [{"ae_title": TOWNSHIP_AE, "charset": ae}] if ae else []
    return patched


PER_AE = [
    # (the township's set, its modality's own set, the answer's SpecificCharacterSet, Python codec)
    (None, "GBK", "GBK", "gbk"),
    ("GBK", "GB18030", "GB18030", "gb18030"),
    ("GB18030", "UTF-8", "ISO_IR 192", "utf-8"),
    ("GBK", None, "GBK", "gbk"),  # no set of its own: the institution's
]


async def test_each_ae_title_is_answered_in_its_own_set(client: Any, node: Any, demo_doc: dict[str, Any]) -> None:
    await ordered(client, modality="DX", name=NAME)
    for institution, ae, expected, codec in PER_AE:
        await load_network(client.hub, with_charsets(demo_doc, institution, ae))
        [item] = await asyncio.to_thread(worklist_find, node.port, None)
        assert item.SpecificCharacterSet == expected, (institution, ae)
        assert item["PatientName"].value.original_string == NAME.encode(codec), (institution, ae)


def store_and_find(port: int, ds: Dataset, query_name: bytes, copies: int = 1) -> list[Dataset]:
    """C-STORE ``ds`` (and ``copies`` - 1 more instances of its series) as the township's modality, then a
    study-root C-FIND by the raw name bytes, neither naming a SpecificCharacterSet; all on one association."""
    ae = AE(ae_title=TOWNSHIP_AE)
    ae.requested_contexts = [
        build_context(str(ds.SOPClassUID)),
        build_context(StudyRootQueryRetrieveInformationModelFind),
    ]
    assoc = ae.associate("127.0.0.1", port, ae_title="TELENET")
    assert assoc.is_established
    found = []
    try:
        for n in range(copies):
            one = copy.deepcopy(ds)
            one.SOPInstanceUID = f"{ds.SOPInstanceUID[:60]}.{n}" if n else ds.SOPInstanceUID
            one.file_meta.MediaStorageSOPInstanceUID = one.SOPInstanceUID
            assert int(assoc.send_c_store(one).Status) == 0
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.add_new(0x00100010, "PN", PersonName(query_name))
        query.StudyInstanceUID = ""
        for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            if status and status.Status in (0xFF00, 0xFF01) and identifier is not None:
                found.append(identifier)
    finally:
        assoc.release()
    return found


async def test_datasets_and_queries_without_a_character_set_are_read_in_the_aes_set(
    client: Any, node: Any, demo_doc: dict[str, Any]
) -> None:
    for charset, term, codec in (("GB18030", "GB18030", "gb18030"), ("GBK", "GBK", "gbk")):
        await load_network(client.hub, with_charsets(demo_doc, None, charset))
        view = await ordered(client, modality="CT", name=NAME)
        ds = instance("CT_small.dcm", accession=view["accession_number"])
        del ds.SpecificCharacterSet
        ds.add_new(0x00100010, "PN", PersonName(NAME.encode(codec)))
        reads = node.handlers.charset_reads
        found = await asyncio.to_thread(store_and_find, node.port, ds, NAME.encode(codec), 3)
        # One read of the AE's registered set for the association, not one per dataset and query.
        assert node.handlers.charset_reads == reads + 1
        async with client.hub.sessions() as session:
            study = (
                await session.execute(select(DicomStudy).where(DicomStudy.study_instance_uid == ds.StudyInstanceUID))
            ).scalar_one()
        assert (study.patient_name, study.character_set) == (NAME, term), "read in the AE's registered set"
        assert ds.StudyInstanceUID in [str(f.StudyInstanceUID) for f in found], "the query's name was read in it too"
        assert {f.SpecificCharacterSet for f in found} == {term}
        assert {f["PatientName"].value.original_string for f in found} == {NAME.encode(codec)}
