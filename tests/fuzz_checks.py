"""What the fuzz tests check after each batch: the database holds no partial rows (half-written aggregates),
and no file is stored without its row nor a row without its file."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from sqlalchemy import exists, func, select, text

from telenet.store.models import (
    DicomInstance,
    DicomSeries,
    DicomStudy,
    HL7InboundMessage,
    Request,
    RouteStep,
)


def examples(strategy: Any, count: int) -> list[Any]:
    """``count`` values drawn from a hypothesis strategy, generated only (no shrinking, no example database):
    the fuzz tests' input, sent afterwards in batches."""
    collected: list[Any] = []

    @settings(
        max_examples=count, database=None, deadline=None, phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(strategy)
    def collect(value: Any) -> None:
        collected.append(value)

    collect()
    return collected


def scaled(cases: int) -> int:
    """A fuzz test's case count under ``TELENET_FUZZ_SCALE`` (1 by default: the full count, as ``make test``
    runs them; 0.1 runs a tenth of every count, for a quicker loop while working)."""
    scale = float(os.environ.get("TELENET_FUZZ_SCALE", "1"))
    return max(1, round(cases * scale))


async def partial_rows(hub: Any, *, storage_dir: Path | None = None, hl7_only: bool = False) -> list[str]:
    """Every broken invariant, as text (empty when the database is whole):

    - a request without a route step, or still with its temporary accession number;
    - (``hl7_only``: every request came in over HL7) a request no inbound message created;
    - a DICOM series without an instance, a study with an instance but no series;
    - an instance whose file is missing, a stored file no instance names (``storage_dir``);
    - on SQLite, a row whose foreign key points nowhere.
    """
    checks: list[tuple[Any, Any, str]] = [
        (Request, ~exists().where(RouteStep.request_id == Request.id), "request(s) without a route step"),
        (Request, Request.accession_number.like("tmp-%"), "request(s) with a temporary accession number"),
        (DicomSeries, ~exists().where(DicomInstance.series_id == DicomSeries.id), "DICOM series without an instance"),
        (
            DicomInstance,
            ~exists().where(DicomStudy.id == DicomInstance.study_id),
            "DICOM instance(s) without their study",
        ),
    ]
    if hl7_only:
        orphan = ~exists().where(HL7InboundMessage.request_id == Request.id)
        checks.append((Request, orphan, "request(s) that no inbound HL7 message created"))
    problems: list[str] = []
    async with hub.sessions() as session:
        for table, broken_when, what in checks:
            found = await session.scalar(select(func.count()).select_from(table).where(broken_when))
            if found:
                problems.append(f"{found} {what}")
        paths = set((await session.execute(select(DicomInstance.path))).scalars())
        if session.bind.dialect.name == "sqlite":
            broken = (await session.execute(text("PRAGMA foreign_key_check"))).all()
            if broken:
                problems.append(f"foreign keys pointing nowhere: {broken[:5]}")
    if storage_dir is not None:
        problems += stored_files(storage_dir, paths)
    return problems


def stored_files(storage_dir: Path, paths: set[str]) -> list[str]:
    """Files against rows: every instance's file exists; every file is an instance's (or one of its derived
    ECG files); the store's temporary folder is empty."""
    root = storage_dir.resolve()
    named = {str((root / p).resolve()) for p in paths}
    problems = []
    missing = [p for p in named if not Path(p).is_file()]
    if missing:
        problems.append(f"{len(missing)} instance(s) whose file is missing, e.g. {missing[:3]}")
    on_disk = {str(p) for p in root.rglob("*") if p.is_file()} if root.exists() else set()
    derived = {
        p for p in on_disk if p.endswith((".ecg.svg", ".ecg.json")) and p.rsplit(".ecg.", 1)[0] + ".dcm" in named
    }
    stray = sorted(on_disk - named - derived)
    if stray:
        problems.append(f"{len(stray)} stored file(s) without an instance, e.g. {stray[:3]}")
    return problems


class RaisedLogs(logging.Handler):
    """Every log record that carries an exception: the listener caught something it did not expect."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.records.append(record)
