"""The one store path of a received instance, whichever protocol brought it (C-STORE, STOW-RS): read and
validate the dataset, place the file durably, measure an ECG, index and match it through the service layer.
Runs on a worker thread (blocking file I/O) and reaches the event loop through the bridge; a failure removes
what it placed, so nothing is half-stored."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from pydicom import dcmread

from gateways.dicom import mapping
from gateways.dicom.bridge import LoopBridge
from gateways.dicom.ecg_files import ecg_paths, process_ecg
from gateways.dicom.status import BadDataset
from gateways.dicom.storage import FileStore
from gateways.dicom.waveform import ECG_SOP_CLASSES
from telenet.domain.access import Actor
from telenet.domain.errors import TelenetError
from telenet.services import studies
from telenet.services.group_commit import in_group
from telenet.services.hub import Hub

log = logging.getLogger(__name__)


class StudyMismatch(BadDataset):
    """The instance belongs to another study than the one the request named (STOW-RS ``/studies/{study}``)."""


def ingest(
    hub: Hub,
    bridge: LoopBridge,
    store: FileStore,
    actor: Actor,
    received: Path,
    *,
    sop_class_uid: str,
    transfer_syntax_uid: str,
    affected_sop_instance_uid: str = "",
    expected_study_uid: str | None = None,
) -> studies.StoreOutcome:
    """Store the dataset in ``received`` (a temporary file the store now owns) and index it; idempotent per
    SOP Instance UID. Raises BadDataset for an unreadable or incomplete dataset."""
    is_ecg = sop_class_uid in ECG_SOP_CLASSES
    try:
        ds = dcmread(received, stop_before_pixels=not is_ecg)
    except Exception as exc:  # pydicom raises many kinds on damaged input
        raise BadDataset(f"unreadable dataset: {exc}") from exc
    try:
        record = mapping.instance_record(
            ds,
            path="",
            size_bytes=0,
            transfer_syntax_uid=transfer_syntax_uid,
            affected_sop_instance_uid=affected_sop_instance_uid,
        )
    except (TelenetError, BadDataset):
        raise
    except Exception as exc:  # pydicom reads elements lazily: a damaged one raises only when mapped
        raise BadDataset(f"unreadable dataset: {exc}") from exc
    if expected_study_uid is not None and record.study_instance_uid != expected_study_uid:
        raise StudyMismatch(f"the instance belongs to study {record.study_instance_uid}, not {expected_study_uid}")
    final = store.instance_path(record.study_instance_uid, record.sop_instance_uid)
    if final.exists():  # a duplicate, or a file whose indexing was interrupted
        record = dataclasses.replace(record, path=str(final), size_bytes=final.stat().st_size)
        outcome = bridge.call(in_group, hub, studies.store_instance, actor, record)
        if outcome.duplicate:
            log.info("duplicate SOP Instance UID %s from %s: kept the first", record.sop_instance_uid, actor.username)
        return outcome
    size = store.place(received, final)
    ecg = process_ecg(ds, store, final) if is_ecg else None
    record = dataclasses.replace(record, path=str(final), size_bytes=size, ecg=ecg)
    try:
        outcome = bridge.call(in_group, hub, studies.store_instance, actor, record)
    except BaseException:
        store.remove(final, *ecg_paths(final))
        raise
    if outcome.duplicate:
        log.info("duplicate SOP Instance UID %s from %s", record.sop_instance_uid, actor.username)
        if outcome.existing_path and Path(outcome.existing_path).resolve() != final.resolve():
            # The first copy is kept under its own study: this one (placed under another) has no row.
            store.remove(final, *ecg_paths(final))
    return outcome
