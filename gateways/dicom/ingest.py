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
from telenet.services import studies
from telenet.services.group_commit import in_group
from telenet.services.hub import Hub

log = logging.getLogger(__name__)


class StudyMismatch(BadDataset):
    """The instance belongs to another study than the one the request named (STOW-RS ``/studies/{study}``)."""


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A received instance read, validated and in place on disk, ready to be indexed."""

    record: studies.InstanceRecord
    final: Path
    placed: bool  # this call placed the file (a failure to index removes it); False: it was there already


def prepare(
    store: FileStore,
    received: Path,
    *,
    sop_class_uid: str,
    transfer_syntax_uid: str,
    affected_sop_instance_uid: str = "",
    expected_study_uid: str | None = None,
    sync_dir: bool = True,
) -> Prepared:
    """Read and validate the dataset in ``received`` (a temporary file the store now owns), move it into
    place durably (the directory's fsync left to the caller when ``sync_dir`` is False) and measure an ECG.
    The received bytes are kept as they are (no re-encoding); pixel data is not parsed. Raises BadDataset."""
    is_ecg = sop_class_uid in ECG_SOP_CLASSES
    try:
        ds = dcmread(received, stop_before_pixels=not is_ecg)
    except Exception as exc:  # pydicom raises many kinds on damaged input
        raise BadDataset(f"unreadable dataset: {exc}") from exc
    record = mapping.instance_record(
        ds,
        path="",
        size_bytes=0,
        transfer_syntax_uid=transfer_syntax_uid,
        affected_sop_instance_uid=affected_sop_instance_uid,
    )
    if expected_study_uid is not None and record.study_instance_uid != expected_study_uid:
        raise StudyMismatch(f"the instance belongs to study {record.study_instance_uid}, not {expected_study_uid}")
    final = store.instance_path(record.study_instance_uid, record.sop_instance_uid)
    if final.exists():  # a duplicate, or a file whose indexing was interrupted
        record = dataclasses.replace(record, path=str(final), size_bytes=final.stat().st_size)
        return Prepared(record, final, placed=False)
    size = store.place(received, final, sync_dir=sync_dir)
    ecg = process_ecg(ds, store, final) if is_ecg else None
    return Prepared(dataclasses.replace(record, path=str(final), size_bytes=size, ecg=ecg), final, placed=True)


def discard(store: FileStore, prepared: Prepared) -> None:
    """Remove what ``prepare`` placed (the instance could not be indexed)."""
    if prepared.placed:
        store.remove(prepared.final, *ecg_paths(prepared.final))


def log_duplicate(outcome: studies.StoreOutcome, record: studies.InstanceRecord, actor: Actor) -> None:
    if outcome.duplicate:
        log.info("duplicate SOP Instance UID %s from %s: kept the first", record.sop_instance_uid, actor.username)


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
    prepared = prepare(
        store,
        received,
        sop_class_uid=sop_class_uid,
        transfer_syntax_uid=transfer_syntax_uid,
        affected_sop_instance_uid=affected_sop_instance_uid,
        expected_study_uid=expected_study_uid,
    )
    try:
        outcome = bridge.call(in_group, hub, studies.store_instance, actor, prepared.record)
    except BaseException:
        discard(store, prepared)
        raise
    log_duplicate(outcome, prepared.record, actor)
    return outcome
