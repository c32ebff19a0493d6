"""The HL7 gateway: an asyncio MLLP listener for orders and patients, the result sender, and the process
pool both use for hl7apy. Glue only: framing is :mod:`~gateways.hl7.mllp`, HL7 is :mod:`~gateways.hl7.codec`
(run in the pool), what a message does is :mod:`telenet.services.hl7_inbound`.

Per connection, messages are answered one at a time in arrival order (original-mode acknowledgment);
connections are independent. A frame past the size limit is answered AR and its connection closed; a
connection silent for the idle timeout is closed; anything else a peer sends gets an ACK and the
connection stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from gateways.hl7 import mapping, work
from gateways.hl7.codec import ErrorInfo, Inbound, Rejected, build_ack
from gateways.hl7.er7 import PEER_CHARSETS
from gateways.hl7.mllp import FrameTooLarge, IncompleteFrame, MLLPReader, frame
from gateways.hl7.sender import ResultSender
from telenet import tls
from telenet.config import Settings
from telenet.domain.errors import TelenetError
from telenet.domain.ratelimit import SlidingWindow
from telenet.domain.sla import Clock
from telenet.services import hl7_inbound, peer_charsets, peers
from telenet.services.hl7_inbound import ReplayOutcome
from telenet.services.hub import Hub
from telenet.services.metrics import Tally
from telenet.services.peers import PeerIdentity
from telenet.store.write_gate import is_lock_timeout, log_failure
from telenet.waits import within

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Answer:
    """What the gateway answered a message with."""

    ack_code: str
    ack: bytes
    text: str | None = None
    duplicate: bool = False


def new_control_id() -> str:
    """MSH-10 of an ACK we send: 20 characters, the ST limit before v2.7."""
    return "TNA" + uuid.uuid4().hex[:17]


class WorkerPool:
    """The process pool for hl7apy, replaced if a worker dies (a crash must not take the gateway down)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    async def start(self) -> None:
        self._pool = work.make_pool(self.workers)
        # Start every worker now (each warms up hl7apy in its initializer) rather than on the first burst.
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._pool, work.warm_up) for _ in range(self.workers)))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._pool is None:
            raise RuntimeError("the HL7 worker pool is not running")
        pool = self._pool
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        except BrokenProcessPool:
            log.error("hl7: a worker process died; starting a new pool")
            if self._pool is pool:
                self._pool = work.make_pool(self.workers)
                pool.shutdown(wait=False, cancel_futures=True)
            raise

    async def stop(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)


class HL7Gateway:
    """Listener, sender and pool, started and stopped together (``cleanup_ctx`` for aiohttp)."""

    def __init__(
        self,
        hub: Hub,
        settings: Settings,
        *,
        clock: Clock | None = None,
        listen: bool = True,
        send: bool = True,
    ) -> None:
        self.hub = hub
        self.settings = settings
        self.clock = clock or hub.clock
        self.pool = WorkerPool(settings.hl7_workers or _cores())
        self.listen = listen
        self.sender = ResultSender(hub, settings, self.pool.run, clock=self.clock) if send else None
        self.server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._busy: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.answered: dict[str, int] = {}
        # Refused peers (spoofed MSH-4, plain connections from afar), counted in /metrics when wired (app.py).
        self.refusals: Tally | None = None
        self._per_peer: dict[str, int] = {}
        self._dead_letters = SlidingWindow(settings.hl7_dead_letters_per_peer_hour, 3600.0)

    @property
    def port(self) -> int:
        """The port the listener is bound to (useful when the settings ask for port 0)."""
        assert self.server is not None and self.server.sockets
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        await self.pool.start()
        if self.listen:
            context = tls.server_context(self.settings, client_certificates=True) if self.settings.hl7_tls else None
            self.server = await asyncio.start_server(
                self._serve, self.settings.hl7_host, self.settings.hl7_port, ssl=context
            )
            log.info("hl7: MLLP listener on %s:%s", self.settings.hl7_host, self.port)
        if self.sender is not None:
            self.sender.start()

    async def stop(self) -> None:
        """Stop listening; idle connections are closed at once, a connection in the middle of a message
        answers it first (cancelling a task inside a database call can leave SQLite locked)."""
        self._stopping = True
        if self.server is not None:
            self.server.close()
        for task in self._connections - self._busy:
            task.cancel()
        if self._busy:
            await asyncio.wait(set(self._busy), timeout=10)
        for task in list(self._connections):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.server is not None:
            await self.server.wait_closed()
        if self.sender is not None:
            await self.sender.stop()
        await self.pool.stop()

    async def cleanup_ctx(self, _app: object) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    # ------------------------------------------------------------------------------------------ connections

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        address = writer.get_extra_info("peername")
        peer = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
        identity = PeerIdentity(
            address[0] if isinstance(address, tuple) else None, tls.fingerprint(writer.get_extra_info("ssl_object"))
        )
        frames = MLLPReader(reader, max_size=self.settings.hl7_max_message_bytes)
        host = identity.address or peer
        self._per_peer[host] = self._per_peer.get(host, 0) + 1
        try:
            if self._per_peer[host] > self.settings.hl7_max_connections_per_peer:
                log.warning(
                    "hl7: refused %s: more than %d connections", peer, self.settings.hl7_max_connections_per_peer
                )
                self._refused("connections-per-peer")
                return
            if (
                self.settings.plain_loopback_only
                and writer.get_extra_info("ssl_object") is None
                and not tls.is_loopback(identity.address)
            ):
                log.warning("hl7: refused a plain connection from %s (plain_loopback_only)", peer)
                self._refused("plain-connection")
                return
            while True:
                try:
                    payload = await within(frames.read(), self.settings.hl7_idle_timeout_seconds)
                except TimeoutError:
                    log.info(
                        "hl7: closing %s after %ss without a message", peer, self.settings.hl7_idle_timeout_seconds
                    )
                    break
                except FrameTooLarge as exc:
                    self._busy.add(task)
                    answer = await self._oversize(exc, peer)
                    writer.write(frame(answer.ack))
                    await writer.drain()
                    break
                except IncompleteFrame as exc:
                    log.warning("hl7: %s closed the connection inside a frame (%d bytes)", peer, len(exc.partial))
                    break
                if payload is None:
                    break
                self._busy.add(task)
                try:
                    answer = await self.handle(payload, peer, identity=identity)
                    writer.write(frame(answer.ack))
                    await writer.drain()
                finally:
                    self._busy.discard(task)
                if self._stopping:
                    break
        except (ConnectionError, OSError) as exc:
            log.info("hl7: connection from %s lost: %s", peer, exc)
        finally:
            self._per_peer[host] -= 1
            if not self._per_peer[host]:
                del self._per_peer[host]
            self._connections.discard(task)
            self._busy.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _oversize(self, exc: FrameTooLarge, peer: str) -> Answer:
        now = self.clock.now()
        rejected, ack = await self.pool.run(
            work.oversize_rejection, exc.head, exc.size, exc.max_size, new_control_id(), now
        )
        await self._dead_letter(exc.head, rejected, peer, note=f" (first {len(exc.head)} bytes kept)")
        return self._count(Answer("AR", ack, rejected.reason))

    def _count(self, answer: Answer) -> Answer:
        self.answered[answer.ack_code] = self.answered.get(answer.ack_code, 0) + 1
        return answer

    # ------------------------------------------------------------------------------------------- messages

    def _refused(self, reason: str) -> None:
        if self.refusals is not None:
            self.refusals.inc(protocol="hl7", reason=reason)

    async def handle(
        self, raw: bytes, peer: str | None, *, dead_letter: bool = True, identity: PeerIdentity | None = None
    ) -> Answer:
        """Everything one inbound message goes through; always returns an ACK to send. With the connection's
        ``identity``, MSH-4 must name the institution it authenticated as (else AR, logged)."""
        now = self.clock.now()
        ack_id = new_control_id()
        try:
            registered = await peer_charsets.facility_charset(self.hub, work.sniff_facility(raw))
            charset = PEER_CHARSETS.get(registered) if registered else None
            message, prebuilt = await self.pool.run(work.parse_with_ack, raw, ack_id, now, charset)
        except Exception:
            log.exception("hl7: parsing a message from %s failed", peer)
            return await self._internal_error(raw, ack_id, now)
        if isinstance(message, Rejected) and message.ack_code == "AR":
            if dead_letter:
                await self._dead_letter(raw, message, peer)
            return self._count(Answer("AR", prebuilt, message.reason))
        refusal = mapping.refusal(message)
        if not message.facility or not message.message_control_id:
            # Without MSH-4 and MSH-10 there is no key to make a re-send idempotent: answer, keep nothing.
            return self._count(Answer("AE", prebuilt, refusal.text if refusal else None))
        too_long = _too_long_key(message)
        if too_long is not None:
            ack = await self.pool.run(work.ack_with_error, message, ack_id, now, too_long)
            return self._count(Answer("AE", ack, too_long.text))
        if identity is not None:
            try:
                spoofed = await peers.check_facility(self.hub, message.facility, identity)
            except Exception:  # the registry could not be read: AE 207, send again (the connection stays)
                log.exception("hl7: checking MSH-4 of %s from %s failed", message.message_control_id, peer)
                return await self._internal_error(raw, ack_id, now, message)
            if spoofed is not None:
                self._refused("facility-not-bound")
                error = ErrorInfo(204, "MSH-4", spoofed)
                ack = await self.pool.run(work.ack_rejected, message, ack_id, now, error)
                return self._count(Answer("AR", ack, spoofed))
        try:
            result = await hl7_inbound.process(
                self.hub,
                mapping.command_for(message, discontinue_policy=self.settings.hl7_discontinue_claimed),
                peer=peer,
                ack=self._ack_builder(message, prebuilt, refusal, ack_id, now),
            )
        except Exception as exc:
            log_failure(log, "hl7: message %s from %s failed", message.message_control_id, peer)
            return await self._internal_error(raw, ack_id, now, message, overloaded=is_lock_timeout(exc))
        text = refusal.text if refusal else (result.error.message if result.error else result.note)
        return self._count(Answer(result.ack_code, result.ack, text, result.duplicate))

    def _ack_builder(
        self, message: Inbound, prebuilt: bytes, refusal: ErrorInfo | None, ack_id: str, now: datetime
    ) -> hl7_inbound.AckFor:
        async def ack(error: TelenetError | None, note: str | None, mode: str = "ack") -> tuple[str, bytes]:
            if mode == "orr" and refusal is None and not isinstance(message, Rejected):
                info = mapping.error_info(error, message) if error is not None else None
                response = await self.pool.run(work.order_response, message, ack_id, now, info, note)
                if response is not None:
                    return ("AE" if info else "AA"), response
            if error is None and note is None:
                code = "AA" if refusal is None else (message.ack_code if isinstance(message, Rejected) else "AE")
                return code, prebuilt
            if error is None:
                return "AA", await self.pool.run(work.ack_with_text, message, ack_id, now, note)
            info = mapping.error_info(error, message)
            return "AE", await self.pool.run(work.ack_with_error, message, ack_id, now, info)

        return ack

    async def _internal_error(
        self, raw: bytes, ack_id: str, now: datetime, message: Inbound | None = None, *, overloaded: bool = False
    ) -> Answer:
        """AE 207 for a failure of ours, or for a write the database refused for now (``overloaded``); nothing is
        stored, so a re-send is tried afresh."""
        if message is None:
            try:
                message, _ = await self.pool.run(work.parse_with_ack, raw, ack_id, now)
            except Exception:
                message = None
        why = "the hub is overloaded" if overloaded else "internal error in the hub"
        error = ErrorInfo(207, None, f"{why}; send the message again later")
        if message is None:
            # The pool is unusable: one small ACK on the loop is the lesser evil.
            ack = build_ack(
                ack_code="AE", control_id_in=None, facility_in=None, version=None, error=error,
                message_control_id=ack_id, now=now,
            )  # fmt: skip
        else:
            ack = await self.pool.run(work.ack_with_error, message, ack_id, now, error)
        return self._count(Answer("AE", ack, error.text))

    async def _dead_letter(self, raw: bytes, message: Rejected, peer: str | None, note: str = "") -> None:
        host = (peer or "-").rsplit(":", 1)[0]
        moment = time.monotonic()
        if self._dead_letters.retry_after(host, moment) > 0:
            log.warning("hl7: not keeping another dead letter from %s this hour", host)
            self._refused("dead-letters-per-peer")
            return
        self._dead_letters.hit(host, moment)
        location = f" [{message.error_location}]" if message.error_location else ""
        try:
            await hl7_inbound.record_dead_letter(
                self.hub,
                raw=raw,
                reason=f"AR {message.error_code}{location}: {message.reason}{note}",
                peer=peer,
                facility=message.facility,
                message_control_id=message.message_control_id,
            )
        except Exception:
            log.exception("hl7: could not keep a dead letter from %s", peer)

    async def replay(self, raw: bytes, peer: str | None) -> ReplayOutcome:
        """Run a dead letter through :meth:`handle` again (without making a new dead letter of it)."""
        answer = await self.handle(raw, peer, dead_letter=False)
        return ReplayOutcome(answer.ack_code, answer.text)


#: Longest MSH-4 and MSH-10 the inbound log keeps (HD-1 is IS 20 and MSH-10 ST 20 up to v2.6, 199 in v2.7).
MAX_FACILITY, MAX_CONTROL_ID = 64, 199


def _too_long_key(message: Inbound) -> ErrorInfo | None:
    if len(message.facility or "") > MAX_FACILITY:
        return ErrorInfo(102, "MSH-4", f"MSH-4 longer than {MAX_FACILITY} characters")
    if len(message.message_control_id or "") > MAX_CONTROL_ID:
        return ErrorInfo(102, "MSH-10", f"MSH-10 longer than {MAX_CONTROL_ID} characters")
    return None


def _cores() -> int:
    return os.cpu_count() or 1
