"""DICOM test material and a running node: instances generated from pydicom's bundled files (new UIDs,
an accession number, Chinese patient names in ISO_IR 192 and GB18030, ≥ 5 MB images for the benchmark),
settings for fast tests, helpers to run pynetdicom SCUs off the event loop and dcmtk tools with TCP_NODELAY."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from telenet.config import Settings

COUNTY_AE = "C01K01"
TOWNSHIP_AE = "C01K01T01"
OTHER_TOWNSHIP_AE = "C02K01T03"  # NL-C02-K01-T03: another county


def pydicom_file(name: str) -> str:
    path = get_testdata_file(name)
    assert isinstance(path, str), f"pydicom test file {name} is missing"
    return path


def dicom_settings(tmp_path: Path, **changes: Any) -> Settings:
    """Settings of a test hub with the DICOM node on a free port and short clocks."""
    values: dict[str, Any] = {
        "var_dir": str(tmp_path / "var"),
        "secret": "test-secret-not-for-production",
        "dicom_enabled": False,  # tests start the node themselves with running_node()
        "hl7_enabled": False,
        "dicom_port": 0,
        "study_quiet_seconds": 0.2,
        "dicom_forward_backoff_seconds": 0.2,
        "dicom_forward_backoff_max_seconds": 1.0,
        "dicom_forward_max_attempts": 50,
    }
    values.update(changes)
    return Settings(**values)


def instance(
    source: str = "CT_small.dcm",
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    accession: str | None = None,
    patient_name: str | None = None,
    charset: str | None = None,
    patient_id: str | None = None,
) -> Dataset:
    """A copy of a bundled file with fresh (or given) UIDs and the given identifiers. With an accession number
    the file's own patient (``CompressedSamples^CT1``, nobody's) is blanked but for what is given: it would
    contradict the order's patient, and a study whose patient contradicts the request's is not linked
    automatically."""
    ds = pydicom.dcmread(pydicom_file(source))
    if accession is not None:
        for keyword in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex"):
            if keyword in ds:
                setattr(ds, keyword, "")
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if accession is not None:
        ds.AccessionNumber = accession
    if charset is not None:
        ds.SpecificCharacterSet = charset
    if patient_name is not None:
        ds.PatientName = patient_name
    if patient_id is not None:
        ds.PatientID = patient_id
    return ds


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def chinese_files(directory: Path, *, accession: str | None = None) -> dict[str, Path]:
    """Two instances whose patient names need a Chinese character set: UTF-8 and GB18030."""
    utf8 = instance("MR_small.dcm", accession=accession, charset="ISO_IR 192", patient_name="张三^", patient_id="P0001")
    gb = instance("CT_small.dcm", charset="GB18030", patient_name="李^四", patient_id="P0002")
    return {"ISO_IR 192": save(utf8, directory / "utf8.dcm"), "GB18030": save(gb, directory / "gb18030.dcm")}


def large_instance(path: Path, *, megabytes: float = 5.5, study_uid: str | None = None) -> Path:
    """A synthetic 16-bit CT slice whose pixel data alone is ``megabytes`` MB (≥ 5 MB for the benchmark)."""
    side = int((megabytes * 1_000_000 / 2) ** 0.5) + 1
    ds = instance("CT_small.dcm", study_uid=study_uid)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    rng = np.random.default_rng(len(str(path)))
    pixels = rng.integers(0, 4096, size=(side, side), dtype=np.uint16)
    ds.Rows, ds.Columns = side, side
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.PixelData = pixels.tobytes()
    return save(ds, path)


def series_of(directory: Path, count: int, *, source: str = "MR_small.dcm", accession: str | None = None) -> list[Path]:
    """``count`` distinct small instances of one study."""
    study, series = generate_uid(), generate_uid()
    return [
        save(instance(source, study_uid=study, series_uid=series, accession=accession), directory / f"{i:05d}.dcm")
        for i in range(count)
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ToolResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


async def run_tool(args: Sequence[str], *, limit_s: float = 60.0, cwd: Path | None = None) -> ToolResult:
    """A dcmtk (or other) command with TCP_NODELAY=1, off the event loop so the hub keeps answering."""
    env = {**os.environ, "TCP_NODELAY": "1"}

    def run() -> ToolResult:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=limit_s, env=env, cwd=cwd)
        return ToolResult(done.returncode, done.stdout, done.stderr)

    return await asyncio.to_thread(run)


async def wait_for(predicate: Any, *, within_s: float = 10.0, interval: float = 0.05) -> Any:
    """Poll an async predicate until it returns something truthy; bounded in time and count."""
    for _ in range(int(within_s / interval) + 1):
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not reached within {within_s} s")


@contextlib.asynccontextmanager
async def node_for(hub: Any, settings: Settings) -> AsyncIterator[Any]:
    from gateways.dicom.node import running_node

    async with running_node(hub, settings) as node:
        yield node


async def ordered(client: Any, **kwargs: Any) -> dict[str, Any]:
    """A request ordered over REST by the demo township (tests.factories.order's body)."""
    from tests.factories import order

    resp = await client.post("/api/v1/requests", json=order(**kwargs), headers=await client.login("township_doc"))
    assert resp.status == 201, await resp.text()
    view: dict[str, Any] = await resp.json()
    return view
