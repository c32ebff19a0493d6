"""Idle associations that wait instead of spinning.

pynetdicom runs two threads per association, and both poll: the DUL reactor sleeps 1 ms between looks at its
socket and queues, and the association reactor sleeps 1 ms between looks at its DIMSE queue. Each turn takes
the GIL, so 20 open associations with nothing to say cost about a core (measured: 107 % of one; 59 % at a
5 ms poll), and at a province peak the node's 200 associations starve the event loop that does the work.

For the node's associations (acceptors) both loops keep pynetdicom's 1 ms pace while the association is busy
and, once nothing has happened for ``BUSY_FOR_S``, wait up to ``IDLE_WAIT_S`` per turn for what they poll for:
the DUL for data on its socket (``select``), the association reactor for a DIMSE message (``Queue.get``). A PDU
or a message wakes them at once, so a request is not served later. What can wait up to one idle turn: a
response the node's own handler puts out after being idle that long (a store that waited for the write
lock), and noticing a timer or the end of the association.

Only the classes are swapped (``assoc.dul.__class__``, as ``_PduLimitedSocket`` is), no pynetdicom code is
copied; requestors keep pynetdicom's loops, since their sending threads spin until the reactor pauses. What is
overridden is private to pynetdicom 3.0 (``_run_loop_delay``, ``_is_transport_event``,
``_process_recv_primitive``): an upgrade must check them again (the node's idle test counts no turns at all if
the swap stops taking effect).
"""

from __future__ import annotations

import queue
import select
import ssl
import time
from typing import Any

from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider

#: How long an association counts as busy after its last PDU or DIMSE message (pynetdicom's 1 ms polling).
BUSY_FOR_S = 0.05
#: The longest an idle loop waits per turn for data or a message.
IDLE_WAIT_S = 0.02
#: pynetdicom's own delay between the DUL's idle turns.
BUSY_DELAY_S = 0.001


class QuietDUL(DULServiceProvider):
    """The DUL provider whose idle turns wait on the socket; see the module docstring."""

    last_activity: float = 0.0

    @property
    def _run_loop_delay(self) -> float:
        """Read by the reactor before each idle turn (and by ``stop_dul`` while it waits for the thread)."""
        if time.monotonic() - self.last_activity < BUSY_FOR_S:
            return BUSY_DELAY_S
        raw = getattr(self.socket, "socket", None)
        if raw is None or (isinstance(raw, ssl.SSLSocket) and raw.pending()):
            return BUSY_DELAY_S
        try:
            select.select([raw], [], [], IDLE_WAIT_S)
        except (OSError, ValueError):  # closed meanwhile: the reactor's own look finds out
            return BUSY_DELAY_S
        return 0.0

    @_run_loop_delay.setter
    def _run_loop_delay(self, value: float) -> None:  # DULServiceProvider.__init__ sets it
        pass

    def _process_recv_primitive(self) -> bool:
        sent = super()._process_recv_primitive()
        if sent:
            self.last_activity = time.monotonic()
        return sent

    def _is_transport_event(self) -> bool:
        received = super()._is_transport_event()
        if received:
            self.last_activity = time.monotonic()
        return received


class QuietDIMSE(DIMSEServiceProvider):
    """The DIMSE provider whose non-blocking look (the acceptor reactor's only one) waits while idle."""

    last_activity: float = 0.0

    def get_msg(self, block: bool = False) -> Any:
        if block or time.monotonic() - self.last_activity < BUSY_FOR_S:
            item = super().get_msg(block)
        else:
            try:
                item = self.msg_queue.get(timeout=IDLE_WAIT_S)
            except queue.Empty:
                item = (None, None)
        if item[1] is not None:
            self.last_activity = time.monotonic()
        return item


def wait_when_idle(assoc: Any) -> None:
    """Make an acceptor association's two loops wait while idle (before its threads start)."""
    now = time.monotonic()
    assoc.dul.__class__ = QuietDUL
    assoc.dul.last_activity = now
    assoc.dimse.__class__ = QuietDIMSE
    assoc.dimse.last_activity = now
