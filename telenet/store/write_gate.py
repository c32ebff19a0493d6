"""One writer at a time per process on SQLite, queued in memory and in order.

SQLite has one write lock. Without this gate every writer of the process checks out a pooled connection,
sends ``BEGIN IMMEDIATE`` and, while another holds the lock, polls for it (SQLite's busy handler sleeps 1 to
100 ms between tries, in no order). Under a burst (a thousand logins at once) writers wait out the busy
timeout while holding pooled connections, the pool runs dry and even reads fail. With the gate a write
session waits here, before it takes a connection, in arrival order; the lock is handed to the next writer
the moment the last one's transaction ends. The wait is bounded (``wait_s``, then the same "database is
locked" error SQLite gives, which the REST API answers as overload: 503 with Retry-After) and so is the
queue (``max_waiting``: past it a writer is refused at once, with the same error).

The gate holds from a session's first statement (when it takes its connection) to the end of its
transaction. Sessions of the hub's write factory carry it (``session_factory(engine, gate=...)``); read
sessions, the audit writer (which has its journal to fall back on) and sessions joined to a group's
connection do not. A task that already holds the gate and opens a second write session passes through, as
before the gate (SQLite's own lock then decides, as it always did). Other processes on the same file still
queue on SQLite's lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import sys
import time
from collections import deque
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.util.concurrency import await_, in_greenlet

log = logging.getLogger(__name__)

#: A hold of the write lock this long is logged (with the holder), since every other writer waited for it.
LONG_HOLD_S = 2.0

#: ``Session.info`` keys: the gate of a write session, and whether this session holds it.
GATE = "telenet_write_gate"
HELD = "telenet_write_gate_held"


class WriteGate:
    """A FIFO lock with a bounded queue and a bounded wait; see the module docstring."""

    def __init__(self, *, wait_s: float, max_waiting: int) -> None:
        self.wait_s = wait_s
        self.max_waiting = max_waiting
        self._loop: asyncio.AbstractEventLoop | None = None
        self._owner: asyncio.Task[Any] | None = None
        self._held = False
        self._waiters: deque[asyncio.Future[None]] = deque()
        #: Writers that waited, refused with a full queue, and timed out (for ``/metrics``).
        self.waited = 0
        self.refused = 0
        self.timed_out = 0
        #: How long the lock was held (from the moment a writer got it, handed over or taken, to its release), in
        #: how many holds, and the part of it spent between a hand-over and the new holder's task running again:
        #: time the lock is held while nobody writes, because the event loop has other tasks to run first.
        self.holds = 0
        self.held_s = 0.0
        self.handover_s = 0.0
        self.longest_hold_s = 0.0
        self._since = 0.0

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def held_by_current_task(self) -> bool:
        return self._held and self._owner is not None and self._owner is asyncio.current_task()

    async def acquire(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (a restarted app, a test): nothing of the old one is held
            self._loop, self._held, self._owner, self._waiters = loop, False, None, deque()
        if not self._held:
            self._held, self._owner = True, asyncio.current_task()
            self._since = time.monotonic()
            return
        if len(self._waiters) >= self.max_waiting:
            self.refused += 1
            raise locked(f"{len(self._waiters)} writers already queued in this process")
        self.waited += 1
        turn: asyncio.Future[None] = loop.create_future()
        self._waiters.append(turn)
        try:
            async with asyncio.timeout(self.wait_s):
                await turn
        except BaseException as exc:
            if turn.done() and not turn.cancelled():
                self.release()  # handed over just as this writer gave up: pass it on
            else:  # gave up while waiting: out of the queue (and of its length), unless a release skipped it
                with contextlib.suppress(ValueError):
                    self._waiters.remove(turn)
            if isinstance(exc, TimeoutError):
                self.timed_out += 1
                raise locked(f"no turn to write within {self.wait_s:g} s") from None
            raise
        self._owner = asyncio.current_task()
        self.handover_s += time.monotonic() - self._since

    def release(self) -> None:
        now = time.monotonic()
        held = now - self._since
        self.holds += 1
        self.held_s += held
        self.longest_hold_s = max(self.longest_hold_s, held)
        self._since = now
        if held >= LONG_HOLD_S:
            task = asyncio.current_task()
            log.warning(
                "the write lock was held %.2f s by %s (%d writers waiting)",
                held,
                task.get_coro() if task is not None else "?",
                len(self._waiters),
            )
        while self._waiters:
            turn = self._waiters.popleft()
            # A writer cancelled (or timed out) while queued has its turn cancelled at once but leaves the
            # queue only when its task next runs: it is skipped, or the lock would never be handed on.
            if not turn.done():
                self._owner = None
                turn.set_result(None)  # still held: ownership goes to that writer
                return
        self._held, self._owner = False, None


def locked(why: str) -> OperationalError:
    """The error SQLite gives a writer that waited out its busy timeout (the REST API answers it as overload,
    503 with Retry-After; DICOM as out of resources, 0xA700/0xA701/0x0213; HL7 as AE 207, send again later)."""
    return OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError(f"database is locked ({why})"))


def is_lock_timeout(exc: BaseException) -> bool:
    """SQLite's "database is locked" / "busy": a writer waited out busy_timeout for the one write lock, or the
    write queue refused it (:func:`locked`)."""
    if not isinstance(exc, OperationalError):
        return False
    text = str(exc.orig if exc.orig is not None else exc).lower()
    return "database is locked" in text or "database is busy" in text


def log_failure(logger: logging.Logger, message: str, *args: object) -> None:
    """In an ``except`` block: a write refused for now (:func:`is_lock_timeout`: overload, which whoever sent it
    tries again) is a one-line warning, so that a burst does not pay for a traceback per refusal; any other
    failure is an error with its traceback."""
    exc = sys.exc_info()[1]
    if exc is not None and is_lock_timeout(exc):
        why = getattr(exc, "orig", None) or exc
        logger.warning(f"{message} (overloaded; tried again later): %s", *args, why)
    else:
        logger.exception(message, *args)


def _gate_of(transaction: SessionTransaction, bind: Any) -> WriteGate | None:
    """The gate to take before this transaction takes a connection of its own, if any."""
    if transaction._parent is not None or isinstance(bind, Connection) or bind in transaction._connections:
        return None
    info = transaction.session.info
    gate = info.get(GATE)
    if gate is None or info.get(HELD) or not in_greenlet():
        return None
    return gate if not gate.held_by_current_task() else None


def _install() -> None:
    original = SessionTransaction._connection_for_bind

    def _connection_for_bind(self: SessionTransaction, bind: Any, execution_options: Any) -> Connection:
        gate = _gate_of(self, bind)
        if gate is None:
            return original(self, bind, execution_options)
        await_(gate.acquire())
        self.session.info[HELD] = True
        try:
            return original(self, bind, execution_options)
        except BaseException:
            _release(self.session)
            raise

    SessionTransaction._connection_for_bind = _connection_for_bind  # type: ignore[method-assign]

    @event.listens_for(Session, "after_transaction_end")
    def _end(session: Session, transaction: SessionTransaction) -> None:
        if transaction._parent is None:
            _release(session)


def _release(session: Session) -> None:
    info = session.info
    if info.pop(HELD, False):
        info[GATE].release()


_install()
