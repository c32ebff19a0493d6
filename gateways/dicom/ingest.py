"""The one store path of a received instance, whichever protocol brought it (C-STORE, STOW-RS): read and
validate the dataset, place the file durably, measure an ECG, index and match it through the service layer.
Runs on a worker thread (blocking file I/O) and reaches the event loop through the bridge; a failure removes
what it placed, so nothing is half-stored."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.filereader import read_partial
from pydicom.tag import BaseTag

from gateways.dicom import mapping
from gateways.dicom.bridge import LoopBridge
from gateways.dicom.ecg_files import ecg_paths, process_ecg
from gateways.dicom.status import BadDataset, Busy, LateAnswer
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


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A received instance read, validated and in place on disk, ready to be indexed."""

    record: studies.InstanceRecord
    final: Path
    placed: bool  # this call placed the file (a failure to index removes it); False: it was there already


@dataclasses.dataclass(frozen=True)
class Parsed:
    """A received instance read and validated, not yet in place."""

    record: studies.InstanceRecord
    final: Path
    dataset: Dataset
    is_ecg: bool


def _before_group_0028(tag: BaseTag, _vr: str | None, _length: int) -> bool:
    return bool(tag.group > 0x0020)


def parse(
    store: FileStore,
    received: Path,
    *,
    sop_class_uid: str,
    transfer_syntax_uid: str,
    affected_sop_instance_uid: str = "",
    expected_study_uid: str | None = None,
    header_only: bool = False,
    charset: Callable[[], str | None] | None = None,
) -> Parsed:
    """Read and validate the dataset in ``received``; pixel data is never parsed. With ``header_only`` (an
    image, not an ECG) reading stops after group 0020, the last the index needs. ``charset`` names the set a
    dataset without SpecificCharacterSet is read in (asked only then). Raises BadDataset."""
    is_ecg = sop_class_uid in ECG_SOP_CLASSES
    try:
        if header_only and not is_ecg:
            with open(received, "rb") as fh:
                ds: Dataset = read_partial(fh, stop_when=_before_group_0028)
        else:
            ds = dcmread(received, stop_before_pixels=not is_ecg)
    except Exception as exc:  # pydicom raises many kinds on damaged input
        raise BadDataset(f"unreadable dataset: {exc}") from exc
    if charset is not None and "SpecificCharacterSet" not in ds:
        mapping.assume_charset(ds, charset())
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
    return Parsed(record, final, ds, is_ecg)


def place(store: FileStore, parsed: Parsed, received: Path, *, synced: bool = False, sync_dir: bool = True) -> Prepared:
    """Move a parsed instance into place durably (``synced``: its file is fsynced already; ``sync_dir``
    False: the caller fsyncs the directory, once for many files) and measure an ECG. The received bytes are
    kept as they are (no re-encoding)."""
    record, final = parsed.record, parsed.final
    if final.exists():  # a duplicate, or a file whose indexing was interrupted
        record = dataclasses.replace(record, path=str(final), size_bytes=final.stat().st_size)
        return Prepared(record, final, placed=False)
    size = store.place(received, final, synced=synced, sync_dir=sync_dir)
    ecg = process_ecg(parsed.dataset, store, final) if parsed.is_ecg else None
    return Prepared(dataclasses.replace(record, path=str(final), size_bytes=size, ecg=ecg), final, placed=True)


def prepare(
    store: FileStore,
    received: Path,
    *,
    sop_class_uid: str,
    transfer_syntax_uid: str,
    affected_sop_instance_uid: str = "",
    expected_study_uid: str | None = None,
    charset: Callable[[], str | None] | None = None,
) -> Prepared:
    """Parse and place (see ``parse`` and ``place``)."""
    parsed = parse(
        store,
        received,
        sop_class_uid=sop_class_uid,
        transfer_syntax_uid=transfer_syntax_uid,
        affected_sop_instance_uid=affected_sop_instance_uid,
        expected_study_uid=expected_study_uid,
        charset=charset,
    )
    return place(store, parsed, received)


def discard(store: FileStore, prepared: Prepared) -> None:
    """Remove what ``prepare`` placed (the instance could not be indexed)."""
    if prepared.placed:
        store.remove(prepared.final, *ecg_paths(prepared.final))


def drop_stray_copy(store: FileStore, prepared: Prepared, outcome: studies.StoreOutcome) -> None:
    """A SOP Instance UID sent again under another study: the first copy is kept under its own study, and
    the one this call placed (under the other) has no row, so it goes."""
    if not (outcome.duplicate and prepared.placed and outcome.existing_path):
        return
    if Path(outcome.existing_path).resolve() != prepared.final.resolve():
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
    registered_charset: Callable[[], str | None] | None = None,
) -> studies.StoreOutcome:
    """Store the dataset in ``received`` (a temporary file the store now owns) and index it; idempotent per
    SOP Instance UID. Raises BadDataset for an unreadable or incomplete dataset. A dataset without
    SpecificCharacterSet is read in the set ``registered_charset()`` names (the calling AE's), asked only then."""
    prepared = prepare(
        store,
        received,
        sop_class_uid=sop_class_uid,
        transfer_syntax_uid=transfer_syntax_uid,
        affected_sop_instance_uid=affected_sop_instance_uid,
        expected_study_uid=expected_study_uid,
        charset=registered_charset,
    )

    async def index() -> studies.StoreOutcome:
        # The file's fate follows the index's outcome, decided here on the loop: the peer may have been told
        # Busy meanwhile (LateAnswer), and a member cancelled while its group commits is committed all the same.
        try:
            outcome = await in_group(hub, studies.store_instance, actor, prepared.record)
        except asyncio.CancelledError:
            raise  # shutting down: committed or not is unknown; the file stays for a re-send (see ``place``)
        except BaseException:
            discard(store, prepared)
            raise
        log_duplicate(outcome, prepared.record, actor)
        drop_stray_copy(store, prepared, outcome)
        return outcome

    try:
        return bridge.call_to_the_end(index)
    except LateAnswer:
        raise  # ``index`` goes on and settles the file
    except Busy:
        discard(store, prepared)  # ``index`` never started
        raise
