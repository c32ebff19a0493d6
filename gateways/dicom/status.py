"""The one table from service errors to DIMSE failure statuses (PS3.4 Annex B, C, F, K, C.4.2), with the
message as ErrorComment. Handlers never pick a status themselves; pynetdicom's ``attempt`` context in
``service_class.py`` is the model."""

from __future__ import annotations

import concurrent.futures
import logging
from enum import StrEnum
from typing import Final

from pydicom.dataset import Dataset
from sqlalchemy.exc import OperationalError

from telenet.domain.errors import Conflict, Forbidden, Invalid, NotFound, TelenetError
from telenet.store.write_gate import is_lock_timeout

log = logging.getLogger(__name__)


class Busy(Exception):
    """The hub could not answer in time (the event loop is saturated or shutting down)."""


class LateAnswer(Busy):
    """The hub did not answer in time, and the work goes on to its end (``LoopBridge.call_to_the_end``)."""


class BadDataset(Exception):
    """The received data cannot be read as the DICOM object it claims to be."""


class Op(StrEnum):
    STORE = "C-STORE"
    FIND = "C-FIND"
    MOVE = "C-MOVE"
    GET = "C-GET"
    N_CREATE = "N-CREATE"
    N_SET = "N-SET"
    N_ACTION = "N-ACTION"


SUCCESS: Final = 0x0000
PENDING: Final = 0xFF00
CANCEL: Final = 0xFE00

_C = (Op.STORE, Op.FIND, Op.MOVE, Op.GET)
_N = (Op.N_CREATE, Op.N_SET, Op.N_ACTION)

_OUT_OF_RESOURCES: Final = {
    Op.STORE: 0xA700,
    Op.FIND: 0xA700,
    Op.MOVE: 0xA701,
    Op.GET: 0xA701,
    **dict.fromkeys(_N, 0x0213),
}

# error class -> service -> status; the first class an exception is an instance of wins.
TABLE: Final[tuple[tuple[type[BaseException], dict[Op, int]], ...]] = (
    # 0xC000 "cannot understand / unable to process"; N-*: 0x0106 invalid attribute value
    (BadDataset, {**dict.fromkeys(_C, 0xC000), **dict.fromkeys(_N, 0x0106)}),
    (Invalid, {**dict.fromkeys(_C, 0xC000), **dict.fromkeys(_N, 0x0106)}),
    # 0x0124 refused: not authorised (general status, PS3.7 C.4)
    (Forbidden, {**dict.fromkeys(_C, 0x0124), **dict.fromkeys(_N, 0x0124)}),
    # C-MOVE 0xA801 move destination unknown; N-SET 0x0112 no such SOP instance
    (NotFound, {Op.STORE: 0xC001, Op.FIND: 0xC001, Op.GET: 0xC001, Op.MOVE: 0xA801, **dict.fromkeys(_N, 0x0112)}),
    # N-CREATE 0x0111 duplicate SOP instance; N-SET on a final step 0x0110 processing failure
    (
        Conflict,
        {Op.STORE: 0xC002, Op.FIND: 0xC002, Op.MOVE: 0xC002, Op.GET: 0xC002, Op.N_CREATE: 0x0111, Op.N_SET: 0x0110}
        | {Op.N_ACTION: 0x0110},
    ),
    # out of resources: 0xA700 (C-STORE, C-FIND), 0xA701 (C-MOVE, C-GET: cannot compute matches); N-*: 0x0213
    (Busy, _OUT_OF_RESOURCES),
    (concurrent.futures.TimeoutError, _OUT_OF_RESOURCES),
    (OSError, _OUT_OF_RESOURCES),
    # anything else: a processing failure, logged with its traceback
    (Exception, {**dict.fromkeys(_C, 0xC001), **dict.fromkeys(_N, 0x0110)}),
)


def status_for(op: Op, exc: BaseException) -> int:
    if is_lock_timeout(exc):  # the one SQLite write lock stayed taken past its wait: an overload, as Busy
        return _OUT_OF_RESOURCES[op]
    for kind, statuses in TABLE:
        if isinstance(exc, kind):
            return statuses[op]
    return 0xC001 if op in _C else 0x0110


def comment_for(exc: BaseException) -> str:
    if is_lock_timeout(exc):
        return "hub busy: the database stayed locked; send again later"
    text = exc.message if isinstance(exc, TelenetError) else (str(exc) or type(exc).__name__)
    # ErrorComment is LO: 64 characters, no backslash or control characters.
    return " ".join(text.replace("\\", "/").split())[:64]


def failure(op: Op, exc: BaseException) -> Dataset:
    """A status dataset (Status + ErrorComment) for ``exc``; unexpected errors are logged with traceback."""
    if is_lock_timeout(exc):
        log.warning("%s refused: %s", op.value, exc.orig if isinstance(exc, OperationalError) else exc)
    elif not isinstance(exc, (TelenetError, BadDataset, Busy, concurrent.futures.TimeoutError)):
        log.error("%s failed", op.value, exc_info=exc)
    status = Dataset()
    status.Status = status_for(op, exc)
    status.ErrorComment = comment_for(exc)
    return status
