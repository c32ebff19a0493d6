"""STOW-RS (PS3.18 10.5): each part of a ``multipart/related; type="application/dicom"`` body goes through
the one store path of C-STORE (``gateways.dicom.ingest``) and the answer is the PS3.18 store response.

The whole body is received into temporary files first, so a malformed body (400), a wrong content type
(415) or an over-size instance (413) stores nothing. Each instance then succeeds or fails on its own with
the standard FailureReason; a failed instance leaves nothing behind.

The instances of one request are stored together: their files are read (header only), fsynced and renamed
into place by a few worker threads, their directories fsynced once each, and all of them indexed as one
member of the group commit (each instance its own use case in a SAVEPOINT, in the order of the parts): one
durable COMMIT per request, not one per instance.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from pydicom.filereader import read_file_meta_info

from gateways.dicom.ingest import (
    Parsed,
    Prepared,
    StudyMismatch,
    discard,
    drop_stray_copy,
    log_duplicate,
    parse,
    place,
)
from gateways.dicom.node import STORAGE_TRANSFER_SYNTAXES, storage_sop_classes
from gateways.dicom.status import BadDataset, Busy
from gateways.dicom.storage import FileStore, fsync_dir, fsync_file
from gateways.dicomweb.media import negotiate_json, parse_media_type
from gateways.dicomweb.multipart import ReceivedPart, receive_parts
from gateways.dicomweb.qido import base_url
from telenet.domain.access import Actor
from telenet.domain.errors import Forbidden, Invalid, TelenetError
from telenet.services import studies
from telenet.services.group_commit import in_group
from telenet.services.hub import Hub
from telenet.services.studies import InstanceRecord, StoreOutcome

log = logging.getLogger(__name__)

# FailureReason (0008,1197) values PS3.18 Table 10.5.3-2 refers to (PS3.4 Annex B status codes).
PROCESSING_FAILURE: Final = 0x0110
SOP_CLASS_NOT_SUPPORTED: Final = 0x0122
NOT_AUTHORIZED: Final = 0x0124
OUT_OF_RESOURCES: Final = 0xA700
DATA_SET_DOES_NOT_MATCH: Final = 0xA900
CANNOT_UNDERSTAND: Final = 0xC000
TRANSFER_SYNTAX_NOT_SUPPORTED: Final = 0xC122

FSYNC_THREADS: Final = 16  # the fsyncs of a request's files overlap (the filesystem commits them together)
_SUPPORTED_CLASSES: Final = frozenset(storage_sop_classes())
_SUPPORTED_SYNTAXES: Final = frozenset(STORAGE_TRANSFER_SYNTAXES)


@dataclass(frozen=True)
class StowLimits:
    max_instance_bytes: int
    max_request_bytes: int


@dataclass
class Outcome:
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str | None
    series_instance_uid: str | None
    failure: int | None = None
    comment: str | None = None
    syntax: str = ""


def failure_reason(exc: BaseException) -> int:
    """The one table from store errors to STOW-RS FailureReason codes."""
    if isinstance(exc, StudyMismatch):
        return DATA_SET_DOES_NOT_MATCH
    if isinstance(exc, (BadDataset, Invalid)):
        return CANNOT_UNDERSTAND
    if isinstance(exc, Forbidden):
        return NOT_AUTHORIZED
    if isinstance(exc, (Busy, concurrent.futures.TimeoutError, OSError)):
        return OUT_OF_RESOURCES
    return PROCESSING_FAILURE


def _check_part(part: ReceivedPart) -> Outcome:
    """The part's media type and file meta information; ``failure`` set when it cannot be stored."""
    media = parse_media_type(part.content_type)
    if media.type != "application/dicom":
        return Outcome("", "", None, None, CANNOT_UNDERSTAND, f"a part of type {media.type} is not a DICOM instance")
    try:
        meta = read_file_meta_info(part.path)
        sop_class = str(meta.get("MediaStorageSOPClassUID", "") or "")
        sop_instance = str(meta.get("MediaStorageSOPInstanceUID", "") or "")
        syntax = str(meta.get("TransferSyntaxUID", "") or "")
    except Exception as exc:  # pydicom raises many kinds on input that is not a Part 10 file
        return Outcome("", "", None, None, CANNOT_UNDERSTAND, f"not a DICOM Part 10 file: {exc}"[:200])
    outcome = Outcome(sop_class, sop_instance, None, None, syntax=syntax)
    if not sop_class or not syntax:
        outcome.failure, outcome.comment = CANNOT_UNDERSTAND, "the file meta information is incomplete"
    elif sop_class not in _SUPPORTED_CLASSES:
        outcome.failure, outcome.comment = SOP_CLASS_NOT_SUPPORTED, f"SOP class {sop_class} is not stored here"
    elif syntax not in _SUPPORTED_SYNTAXES:
        outcome.failure, outcome.comment = TRANSFER_SYNTAX_NOT_SUPPORTED, f"transfer syntax {syntax} is not accepted"
    return outcome


def _parse_parts(
    store: FileStore, parts: list[ReceivedPart], expected_study: str | None
) -> list[tuple[Outcome, Parsed | None]]:
    """Every part checked and parsed, one after another on one worker thread (parsing holds the GIL: more
    threads would only take turns); a part that fails has its Outcome's failure set and no Parsed."""
    out: list[tuple[Outcome, Parsed | None]] = []
    for part in parts:
        outcome = _check_part(part)
        if outcome.failure is not None:
            out.append((outcome, None))
            continue
        try:
            parsed = parse(
                store,
                part.path,
                sop_class_uid=outcome.sop_class_uid,
                transfer_syntax_uid=outcome.syntax,
                affected_sop_instance_uid=outcome.sop_instance_uid,
                expected_study_uid=expected_study,
                header_only=True,
            )
        except Exception as exc:
            out.append((_failed(outcome, exc), None))
            continue
        out.append((outcome, parsed))
    return out


def _place_parts(
    store: FileStore,
    parts: list[ReceivedPart],
    parsed: list[tuple[Outcome, Parsed | None]],
    synced: list[BaseException | None],
) -> list[Outcome | Prepared]:
    """The parsed parts renamed into place (their files fsynced already), then one fsync per directory."""
    ready: list[Outcome | Prepared] = []
    for part, (outcome, item), sync_error in zip(parts, parsed, synced, strict=True):
        if item is None:
            ready.append(outcome)
        elif sync_error is not None:
            ready.append(_failed(outcome, sync_error))
        else:
            try:
                ready.append(place(store, item, part.path, synced=True, sync_dir=False))
            except Exception as exc:
                ready.append(_failed(outcome, exc))
    _sync_dirs([p for p in ready if isinstance(p, Prepared)])
    return ready


def _failed(outcome: Outcome, exc: BaseException) -> Outcome:
    outcome.failure = failure_reason(exc)
    outcome.comment = exc.message if isinstance(exc, TelenetError) else str(exc) or type(exc).__name__
    if outcome.failure == PROCESSING_FAILURE:
        log.error("STOW-RS of %s failed", outcome.sop_instance_uid, exc_info=exc)
    return outcome


def _sync_dirs(prepared: list[Prepared]) -> None:
    """One fsync per directory that received files (the renames durable before the index names them)."""
    for directory in sorted({p.final.parent for p in prepared if p.placed}):
        fsync_dir(directory)


async def index_all(hub: Hub, actor: Actor, records: list[InstanceRecord]) -> list[StoreOutcome | Exception]:
    """All ``records`` as one member of the hub's group commit (``studies.store_instances``: the instances of
    a series in one SAVEPOINT; a failure rolls back only its own), in order; returns once the one COMMIT is
    durable."""

    async def each(joined: Hub) -> list[StoreOutcome | Exception]:
        return await studies.store_instances(joined, actor, records)

    return await in_group(hub, each)


def _sequence_item(outcome: Outcome, root: str) -> dict[str, Any]:
    item: dict[str, Any] = {
        "00081150": {"vr": "UI", "Value": [outcome.sop_class_uid]} if outcome.sop_class_uid else {"vr": "UI"},
        "00081155": {"vr": "UI", "Value": [outcome.sop_instance_uid]} if outcome.sop_instance_uid else {"vr": "UI"},
    }
    if outcome.failure is not None:
        item["00081197"] = {"vr": "US", "Value": [outcome.failure]}
        if outcome.comment:
            item["00000902"] = {"vr": "LO", "Value": [" ".join(outcome.comment.split())[:64]]}
    elif outcome.study_instance_uid:
        url = f"{root}/studies/{outcome.study_instance_uid}"
        item["00081190"] = {"vr": "UR", "Value": [url]}
    return item


def store_response(outcomes: list[Outcome], root: str, study_uid: str | None) -> tuple[int, dict[str, Any]]:
    """200 all stored, 202 some failed, 409 none stored; the PS3.18 Store Instances Response Module."""
    stored = [o for o in outcomes if o.failure is None]
    failed = [o for o in outcomes if o.failure is not None]
    body: dict[str, Any] = {}
    studies = {o.study_instance_uid for o in stored if o.study_instance_uid}
    target = study_uid or (next(iter(studies)) if len(studies) == 1 else None)
    if target:
        body["00081190"] = {"vr": "UR", "Value": [f"{root}/studies/{target}"]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": [_sequence_item(o, root) for o in failed]}
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": [_sequence_item(o, root) for o in stored]}
    status = 200 if not failed else 202 if stored else 409
    return status, body


async def _index(hub: Hub, actor: Actor, store: FileStore, ready: list[Outcome | Prepared]) -> list[Outcome]:
    """The placed parts indexed together; a part that fails to index has its file removed."""
    prepared = [item for item in ready if isinstance(item, Prepared)]
    try:
        results = await index_all(hub, actor, [p.record for p in prepared]) if prepared else []
    except Exception as exc:  # the shared commit failed: nothing of this request is indexed
        log.error("STOW-RS of %d instances failed", len(prepared), exc_info=exc)
        results = [exc] * len(prepared)
    indexed = dict(zip((id(p) for p in prepared), results, strict=True))
    outcomes = []
    for item in ready:
        if isinstance(item, Outcome):
            outcomes.append(item)
            continue
        record = item.record
        outcome = Outcome(record.sop_class_uid, record.sop_instance_uid, None, None)
        result = indexed[id(item)]
        if isinstance(result, Exception):
            discard(store, item)
            outcomes.append(_failed(outcome, result))
        else:
            log_duplicate(result, record, actor)
            drop_stray_copy(store, item, result)
            outcome.study_instance_uid = result.study_instance_uid
            outcomes.append(outcome)
    return outcomes


async def store_parts(
    hub: Hub, actor: Actor, store: FileStore, parts: list[ReceivedPart], study_uid: str | None
) -> list[Outcome]:
    """The received parts stored as C-STORE stores an instance, one Outcome per part (never raises for a part).
    Their files are fsynced by many threads at once (the filesystem commits them together) while one thread
    parses them; then they are renamed into place and indexed together. What is not stored stays where it was
    received (the caller discards it)."""
    loop = asyncio.get_running_loop()
    pool = concurrent.futures.ThreadPoolExecutor(FSYNC_THREADS, thread_name_prefix="stow-fsync")
    try:
        syncs = [loop.run_in_executor(pool, fsync_file, part.path) for part in parts]
        parsed = await asyncio.to_thread(_parse_parts, store, parts, study_uid)
        synced = await asyncio.gather(*syncs, return_exceptions=True)
    finally:
        pool.shutdown(wait=False)
    errors = [r if isinstance(r, BaseException) else None for r in synced]
    ready = await asyncio.to_thread(_place_parts, store, parts, parsed, errors)
    return await _index(hub, actor, store, ready)


async def stow(
    request: web.Request,
    hub: Hub,
    actor: Actor,
    store: FileStore,
    limits: StowLimits,
    study_uid: str | None,
) -> web.Response:
    media = negotiate_json(request.headers.get("Accept"))
    tmp_dir = Path(store.root) / "tmp"
    received = await receive_parts(
        request, tmp_dir, max_part_bytes=limits.max_instance_bytes, max_total_bytes=limits.max_request_bytes
    )
    try:
        outcomes = await store_parts(hub, actor, store, received.parts, study_uid)
    finally:
        received.discard()  # stored files were renamed into place; what is left failed
    status, body = store_response(outcomes, base_url(request), study_uid)
    return web.Response(
        status=status,
        body=json.dumps(body, ensure_ascii=False).encode("utf-8"),
        headers={"Content-Type": media},
    )
