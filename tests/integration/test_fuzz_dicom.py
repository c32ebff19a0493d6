"""Bounded DICOM fuzzing: more than ten thousand datasets, built by hypothesis (UIDs, identifiers, dates,
character sets, missing attributes, meta information that contradicts the dataset) and byte-mutated (flips,
cuts, bogus lengths, a lost preamble), go through the one store path both protocols share: most as STOW-RS
parts through ``stow.store_parts`` (as STOW-RS stores them: Part 10 reading, parse, place, index) in-process,
a bounded share over real DICOM associations (C-STORE to the running node) and real HTTP STOW-RS. Every
refusal is a clear failure status (never the processing failure an unexpected exception maps to), nothing
logs an exception, and after each batch the database and the file store agree: no partial rows, no stray or
missing files."""

from __future__ import annotations

import asyncio
import io
import logging
import random
import re
import uuid
from pathlib import Path
from typing import Any

import pydicom
import pytest
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE

from gateways.dicom.storage import FileStore
from gateways.dicomweb.multipart import ReceivedPart
from gateways.dicomweb.stow import CANNOT_UNDERSTAND, PROCESSING_FAILURE, store_parts
from telenet.config import Settings
from telenet.services.auth import actor_for_username
from tests.dicom_fixtures import TOWNSHIP_AE, dicom_settings, instance, node_for, pydicom_file
from tests.fuzz_checks import RaisedLogs, examples, partial_rows, scaled

pytestmark = [
    pytest.mark.parametrize("database", ["sqlite"], indirect=True),
    pytest.mark.fuzz,
    # Minutes of CPU by design (10,000 cases): more than the suite's default timeout under its load.
    pytest.mark.timeout(600),
]

#: The generated cases, by way in, for each of the two shards of the big test (each in its own xdist group, so
#: that two workers share them); together at least ``TOTAL_CASES``, and each shard asserts that its own ran.
BUILT_CASES = scaled(750)  # hypothesis-built datasets, in-process
MUTATED_CASES = scaled(4_100)  # byte mutations of built and bundled files, in-process
ASSOCIATION_CASES = scaled(120)  # hypothesis-built datasets by C-STORE over a real association (shard 0)
HTTP_CASES = scaled(240)  # mutated files as parts of real STOW-RS requests, 8 parts a request (shard 0)
TOTAL_CASES = scaled(10_000)
PLANNED = (
    BUILT_CASES + MUTATED_CASES + ASSOCIATION_CASES + HTTP_CASES,  # shard 0: every way in
    BUILT_CASES + MUTATED_CASES,  # shard 1: more in-process cases, from other seeds
)
assert sum(PLANNED) >= TOTAL_CASES, PLANNED
BATCH = 1_000
SOURCES = ("CT_small.dcm", "MR_small.dcm")
UID = re.compile(r"(?=.{1,64}$)[0-9]+(\.[0-9]+)*")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return dicom_settings(tmp_path)


# ------------------------------------------------------------------------------------------- generation

_UIDS = st.one_of(
    st.builds(generate_uid),
    st.sampled_from(["", "1", "1..2", "0.1.2", "1.2.3.", "abc", "1.2.840.10008.1.2", "9" * 65, "1.2.\x00", "1.2 3"]),
)
_TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["张三^", "李^四", "A" * 70, "\\\\", "^^^^^", "=王=", "\x1b$B", "P" * 65, ""]),
)
_DATES = st.sampled_from(["20260302", "", "2026", "20261345", "abcdefgh", "2026-03-02", "00000000", "19000101-"])
_CHARSETS = st.sampled_from(
    ["ISO_IR 192", "GB18030", "GBK", "ISO_IR 100", "", "BOGUS", "ISO 2022 IR 58", "\\ISO_IR 192"]
)
_DROPPABLE = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientID", "SOPClassUID", "Modality")


@st.composite
def built_datasets(draw: Any) -> bytes:
    ds = instance(draw(st.sampled_from(SOURCES)))
    for keyword, strategy in (
        ("StudyInstanceUID", _UIDS), ("SeriesInstanceUID", _UIDS), ("SOPInstanceUID", _UIDS),
        ("PatientID", _TEXT), ("PatientName", _TEXT), ("AccessionNumber", _TEXT), ("StudyDate", _DATES),
        ("Modality", st.sampled_from(["CT", "MR", "", "XX", "ECG", "ct"])), ("SpecificCharacterSet", _CHARSETS),
    ):  # fmt: skip
        if draw(st.booleans()):
            setattr(ds, keyword, draw(strategy))
    for keyword in draw(st.lists(st.sampled_from(_DROPPABLE), max_size=2, unique=True)):
        if keyword in ds:
            delattr(ds, keyword)
    meta = ds.file_meta
    if draw(st.integers(0, 4)) == 0:
        meta.MediaStorageSOPInstanceUID = draw(_UIDS)  # the meta contradicts the dataset
    if draw(st.integers(0, 5)) == 0:
        meta.TransferSyntaxUID = draw(st.sampled_from(["1.2.840.10008.1.2.4.50", "1.2.3", "1.2.840.10008.1.2.2"]))
    if draw(st.integers(0, 5)) == 0:
        meta.MediaStorageSOPClassUID = draw(st.sampled_from(["1.2.3.4", "1.2.840.10008.5.1.4.1.1.7", ""]))
    return encode(ds)


def encode(ds: Dataset) -> bytes:
    out = io.BytesIO()
    try:
        pydicom.dcmwrite(out, ds, enforce_file_format=False)
    except ValueError:  # a compressed transfer syntax the pixels are not in: the meta lies, without pixels
        del ds.PixelData
        out = io.BytesIO()
        pydicom.dcmwrite(out, ds, enforce_file_format=False)
    return out.getvalue()


def built(count: int) -> list[bytes]:
    validation = (pydicom.config.settings.reading_validation_mode, pydicom.config.settings.writing_validation_mode)
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    pydicom.config.settings.writing_validation_mode = pydicom.config.IGNORE
    try:
        return examples(built_datasets(), count)
    finally:
        pydicom.config.settings.reading_validation_mode, pydicom.config.settings.writing_validation_mode = validation


def mutate(rng: random.Random, raw: bytes) -> bytes:
    data = bytearray(raw)
    kind = rng.randrange(9)
    if kind == 0:  # bytes flipped
        for _ in range(rng.randint(1, 16)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 1:  # cut
        del data[rng.randrange(len(data)) :]
    elif kind == 2:  # a length field made huge or odd
        at = rng.randrange(132, max(133, len(data) - 4))
        data[at : at + 4] = rng.choice([b"\xff\xff\xff\xff", b"\xfe\xff\xff\x7f", b"\x01\x00\x00\x00", b"\x00\x00"])
    elif kind == 3:  # no preamble, or no DICM prefix
        data = data[128:] if rng.random() < 0.5 else data[:128] + b"DICX" + data[132:]
    elif kind == 4:  # a chunk repeated
        start = rng.randrange(len(data))
        data[start:start] = data[start : start + rng.randint(1, 64)] * rng.randint(1, 8)
    elif kind == 5:  # a chunk removed
        start = rng.randrange(len(data))
        del data[start : start + rng.randint(1, 256)]
    elif kind == 6:  # random bytes after the preamble
        data = data[:132] + bytes(rng.randrange(256) for _ in range(rng.randint(0, 400)))
    elif kind == 7:  # empty, or only the preamble
        data = bytearray(rng.choice([b"", bytes(128) + b"DICM", b"DICM"]))
    else:  # a tag rewritten to one the dataset should not have here
        at = rng.randrange(132, max(133, len(data) - 4))
        data[at : at + 4] = rng.choice(
            [b"\xe0\x7f\x10\x00", b"\xfe\xff\x00\xe0", b"\x08\x00\x05\x00", b"\x02\x00\x10\x00"]
        )
    return bytes(data)


# ---------------------------------------------------------------------------------------------- checks


def stored_or_clear(outcome: Any, raw: bytes) -> bool:
    """True when stored; a refusal must name a failure reason other than a processing failure, with text."""
    if outcome.failure is None:
        return True
    assert outcome.failure != PROCESSING_FAILURE, (outcome.comment, raw[:200])
    assert outcome.comment, raw[:200]
    return False


async def run_parts(hub: Any, store: FileStore, actor: Any, cases: list[bytes]) -> int:
    """The cases as the parts of one STOW-RS request through ``stow.store_parts``; returns how many were
    stored. What is left is discarded as STOW-RS's ``received.discard()`` does for refused parts."""
    paths = [store.root / "tmp" / f"fuzz-{uuid.uuid4().hex}.dcm" for _ in cases]
    for path, raw in zip(paths, cases, strict=True):
        path.write_bytes(raw)
    try:
        parts = [ReceivedPart("application/dicom", path, len(raw)) for path, raw in zip(paths, cases, strict=True)]
        outcomes = await store_parts(hub, actor, store, parts, None)
    finally:
        for path in paths:
            path.unlink(missing_ok=True)
    return sum(stored_or_clear(outcome, raw) for outcome, raw in zip(outcomes, cases, strict=True))


async def store_one(hub: Any, store: FileStore, actor: Any, raw: bytes, name: str) -> Any:
    """One part through ``stow.store_parts`` as STOW-RS receives it; what is left is discarded as STOW-RS's
    ``received.discard()`` does for a refused part."""
    path = store.root / "tmp" / f"{name}.dcm"
    path.write_bytes(raw)
    try:
        [outcome] = await store_parts(hub, actor, store, [ReceivedPart("application/dicom", path, len(raw))], None)
    finally:
        path.unlink(missing_ok=True)
    return outcome


def c_store_all(port: int, cases: list[bytes]) -> dict[int, int]:
    """C-STORE every dataset that pydicom can read back over one association; status -> count."""
    ae = AE(ae_title=TOWNSHIP_AE)
    classes = {str(pydicom.dcmread(pydicom_file(source)).SOPClassUID) for source in SOURCES}
    for sop_class in sorted(classes):
        ae.add_requested_context(sop_class)
    statuses: dict[int, int] = {}
    assoc = ae.associate("127.0.0.1", port, ae_title="TELENET")
    assert assoc.is_established
    accepted = {(str(c.abstract_syntax), str(c.transfer_syntax[0])) for c in assoc.accepted_contexts}
    try:
        for raw in cases:
            try:
                ds = pydicom.dcmread(io.BytesIO(raw), force=True)
                wanted = (str(ds.get("SOPClassUID", "")), str(ds.file_meta.get("TransferSyntaxUID", "")))
                # Without a SOP Instance UID, pynetdicom sends a C-STORE-RQ that pynetdicom's own state machine in
                # the node fails to decode: it closes the association without a status (pynetdicom, not ours).
                if wanted not in accepted or not UID.fullmatch(str(ds.get("SOPInstanceUID", ""))):
                    raise ValueError("no presentation context for it: our own peer would not send it")
                status = assoc.send_c_store(ds)
            except (ValueError, AttributeError, TypeError, KeyError):
                statuses[-1] = statuses.get(-1, 0) + 1  # our own peer refused to send it: still a case
                continue
            if "Status" not in status:  # pynetdicom could not encode it, so sent nothing; the node must not drop us
                assert assoc.is_established, "the node aborted the association"
                statuses[-1] = statuses.get(-1, 0) + 1
                continue
            code = int(status.Status)
            assert (code != 0x0110 and code != 0xC001) or "ErrorComment" in status, status
            statuses[code] = statuses.get(code, 0) + 1
    finally:
        assoc.release()
        ae.shutdown()
    return statuses


def multipart(parts: list[bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b"".join(
        b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n" for part in parts
    )
    return (
        body + b"--" + boundary.encode() + b"--\r\n",
        f'multipart/related; type="application/dicom"; boundary={boundary}',
    )


@pytest.mark.parametrize(
    "shard", [pytest.param(i, marks=pytest.mark.xdist_group(f"fuzz-dicom-{i}")) for i in range(len(PLANNED))]
)
async def test_ten_thousand_fuzzed_datasets_get_clear_statuses_and_leave_no_partial_rows_or_stray_files(
    client: Any, settings: Settings, shard: int
) -> None:
    rng = random.Random(14 + shard)
    hub = client.hub
    store = FileStore(settings.resolved_dicom_storage_dir)
    actor = await actor_for_username(hub, "township_doc")
    seeds = built(BUILT_CASES)
    bundled = [encode(instance(source)) for source in SOURCES]
    cases = seeds + [mutate(rng, rng.choice(seeds + bundled)) for _ in range(MUTATED_CASES)]
    rng.shuffle(cases)
    raised = RaisedLogs()
    logging.getLogger().addHandler(raised)
    ran = stored = 0
    try:
        for start in range(0, len(cases), BATCH):
            batch = cases[start : start + BATCH]
            stored += await run_parts(hub, store, actor, batch)
            ran += len(batch)
            assert not raised.records, [r.getMessage() for r in raised.records[:5]]
            assert await partial_rows(hub, storage_dir=store.root) == []
        if shard == 0:
            ran += await by_association_and_stow_rs(client, settings, rng, seeds, store, raised)
    finally:
        logging.getLogger().removeHandler(raised)
    assert ran >= PLANNED[shard], ran
    assert stored > 0, stored  # some were stored: the mutations are not one wall


async def by_association_and_stow_rs(
    client: Any, settings: Settings, rng: random.Random, seeds: list[bytes], store: FileStore, raised: RaisedLogs
) -> int:
    """Built datasets by C-STORE over a real association, mutated files as the parts of real STOW-RS requests;
    how many cases ran. ``raised`` is the caller's handler of logged exceptions, still attached."""
    hub = client.hub
    async with node_for(hub, settings) as node:
        statuses = await asyncio.to_thread(c_store_all, node.port, built(ASSOCIATION_CASES))
    ran = sum(statuses.values())
    assert 0 in statuses, statuses  # some were stored over the association
    assert await partial_rows(hub, storage_dir=store.root) == []
    headers = await client.login("township_doc")
    http = [mutate(rng, rng.choice(seeds)) if i % 3 else rng.choice(seeds) for i in range(HTTP_CASES)]
    for start in range(0, len(http), 8):
        body, media = multipart(http[start : start + 8])
        resp = await client.post("/dicom-web/studies", data=body, headers={**headers, "Content-Type": media})
        assert resp.status in (200, 202, 409), (resp.status, await resp.text())
        answer = await resp.json()
        for item in (answer.get("00081198") or {}).get("Value", []):  # FailedSOPSequence: a reason each
            assert int(item["00081197"]["Value"][0]) != PROCESSING_FAILURE, item
        ran += len(http[start : start + 8])
    assert not raised.records, [r.getMessage() for r in raised.records[:5]]
    assert await partial_rows(hub, storage_dir=store.root) == []
    return ran


async def test_an_element_pydicom_cannot_read_is_refused_as_not_understood_not_as_a_processing_failure(
    client: Any, settings: Settings
) -> None:
    """Found by the fuzzing: a damaged VR deep in the dataset raised only when the instance was mapped (pydicom
    reads lazily), so STOW-RS answered 0110 processing failure and logged a traceback."""
    store = FileStore(settings.resolved_dicom_storage_dir)
    actor = await actor_for_username(client.hub, "township_doc")
    raw = encode(instance("MR_small.dcm"))
    assert b"\x20\x00\x13\x00IS" in raw
    damaged = raw.replace(b"\x20\x00\x13\x00IS", b"\x20\x00\x13\x00I\x06", 1)
    outcome = await store_one(client.hub, store, actor, damaged, "damaged")
    assert outcome.failure == CANNOT_UNDERSTAND and "unreadable dataset" in outcome.comment, outcome
    assert await partial_rows(client.hub, storage_dir=store.root) == []


async def test_a_sop_instance_uid_sent_again_under_another_study_leaves_no_file_without_a_row(
    client: Any, settings: Settings
) -> None:
    """Found by the fuzzing: the second copy was placed under its own study's folder, the index kept the first
    (idempotent per SOP Instance UID), and the second file stayed on disk with no row naming it."""
    store = FileStore(settings.resolved_dicom_storage_dir)
    actor = await actor_for_username(client.hub, "township_doc")
    sop = generate_uid()
    outcomes = []
    for n in range(2):
        raw = encode(instance("CT_small.dcm", sop_uid=sop))  # a new study each time, the same SOP Instance UID
        outcomes.append(await store_one(client.hub, store, actor, raw, f"again-{n}"))
    assert [o.failure for o in outcomes] == [None, None], outcomes
    assert outcomes[0].study_instance_uid == outcomes[1].study_instance_uid  # the second answers as the first
    assert await partial_rows(client.hub, storage_dir=store.root) == []
