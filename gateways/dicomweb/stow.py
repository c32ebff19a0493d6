"""STOW-RS (PS3.18 10.5): each part of a ``multipart/related; type="application/dicom"`` body goes through
the one store path of C-STORE (``gateways.dicom.ingest``) and the answer is the PS3.18 store response.

The whole body is received into temporary files first, so a malformed body (400), a wrong content type
(415) or an over-size instance (413) stores nothing. Each instance then succeeds or fails on its own with
the standard FailureReason; a failed instance leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, ParamSpec, TypeVar

from aiohttp import web
from pydicom.filereader import read_file_meta_info

from gateways.dicom.bridge import LoopBridge
from gateways.dicom.ingest import StudyMismatch, ingest
from gateways.dicom.node import STORAGE_TRANSFER_SYNTAXES, storage_sop_classes
from gateways.dicom.status import BadDataset, Busy
from gateways.dicom.storage import FileStore
from gateways.dicomweb.media import negotiate_json, parse_media_type
from gateways.dicomweb.multipart import ReceivedPart, receive_parts
from gateways.dicomweb.qido import base_url
from telenet.domain.access import Actor
from telenet.domain.errors import Forbidden, Invalid, TelenetError
from telenet.services.hub import Hub

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

# FailureReason (0008,1197) values PS3.18 Table 10.5.3-2 refers to (PS3.4 Annex B status codes).
PROCESSING_FAILURE: Final = 0x0110
SOP_CLASS_NOT_SUPPORTED: Final = 0x0122
NOT_AUTHORIZED: Final = 0x0124
OUT_OF_RESOURCES: Final = 0xA700
DATA_SET_DOES_NOT_MATCH: Final = 0xA900
CANNOT_UNDERSTAND: Final = 0xC000
TRANSFER_SYNTAX_NOT_SUPPORTED: Final = 0xC122

PARALLEL_PARTS: Final = 8
WAIT_S: Final = 300.0  # a part may wait for the index writes of the parts before it
_SUPPORTED_CLASSES: Final = frozenset(storage_sop_classes())
_SUPPORTED_SYNTAXES: Final = frozenset(STORAGE_TRANSFER_SYNTAXES)


class OrderedBridge(LoopBridge):
    """The loop bridge for the parts of one body: their files are read, fsynced and renamed in parallel
    threads, their index writes run one at a time and in the order of the parts (so the index keeps the
    order the client sent, and SQLite's busy handler never has to arbitrate)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, parts: int) -> None:
        super().__init__(loop, timeout=WAIT_S)
        self._turns = [asyncio.Event() for _ in range(parts)]
        self._local = threading.local()

    def bind(self, index: int) -> None:
        """On the worker thread: the following calls are part ``index``'s."""
        self._local.index = index

    def done(self, index: int) -> None:
        """On the loop: part ``index`` has no (more) index writes."""
        self._turns[index].set()

    def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        index: int = self._local.index

        async def in_turn() -> T:
            if index:
                await self._turns[index - 1].wait()
            try:
                return await fn(*args, **kwargs)
            finally:
                self._turns[index].set()

        return super().call(in_turn)


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


def _store_part(
    hub: Hub, bridge: LoopBridge, store: FileStore, actor: Actor, part: ReceivedPart, expected_study: str | None
) -> Outcome:
    """One part through the C-STORE path; runs on a worker thread and never raises."""
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
    outcome = Outcome(sop_class, sop_instance, None, None)
    if not sop_class or not syntax:
        outcome.failure, outcome.comment = CANNOT_UNDERSTAND, "the file meta information is incomplete"
    elif sop_class not in _SUPPORTED_CLASSES:
        outcome.failure, outcome.comment = SOP_CLASS_NOT_SUPPORTED, f"SOP class {sop_class} is not stored here"
    elif syntax not in _SUPPORTED_SYNTAXES:
        outcome.failure, outcome.comment = TRANSFER_SYNTAX_NOT_SUPPORTED, f"transfer syntax {syntax} is not accepted"
    if outcome.failure is not None:
        return outcome
    try:
        stored = ingest(
            hub,
            bridge,
            store,
            actor,
            part.path,
            sop_class_uid=sop_class,
            transfer_syntax_uid=syntax,
            affected_sop_instance_uid=sop_instance,
            expected_study_uid=expected_study,
        )
        outcome.study_instance_uid = stored.study_instance_uid
    except Exception as exc:
        outcome.failure = failure_reason(exc)
        outcome.comment = exc.message if isinstance(exc, TelenetError) else str(exc) or type(exc).__name__
        if outcome.failure == PROCESSING_FAILURE:
            log.error("STOW-RS of %s failed", sop_instance, exc_info=exc)
    return outcome


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
    parts = received.parts
    bridge = OrderedBridge(asyncio.get_running_loop(), len(parts))
    # A pool of its own, as large as the parts in flight: the lowest part in flight always has a thread,
    # so waiting for turns cannot starve it.
    pool = concurrent.futures.ThreadPoolExecutor(PARALLEL_PARTS, thread_name_prefix="stow")
    slots = asyncio.Semaphore(PARALLEL_PARTS)
    loop = asyncio.get_running_loop()

    def run(index: int, part: ReceivedPart) -> Outcome:
        bridge.bind(index)
        return _store_part(hub, bridge, store, actor, part, study_uid)

    async def store_one(index: int, part: ReceivedPart) -> Outcome:
        async with slots:
            try:
                return await loop.run_in_executor(pool, run, index, part)
            finally:
                bridge.done(index)

    try:
        outcomes = list(await asyncio.gather(*(store_one(i, part) for i, part in enumerate(parts))))
    finally:
        pool.shutdown(wait=False)
        received.discard()  # stored files were renamed into place; what is left failed
    status, body = store_response(outcomes, base_url(request), study_uid)
    return web.Response(
        status=status,
        body=json.dumps(body, ensure_ascii=False).encode("utf-8"),
        headers={"Content-Type": media},
    )
