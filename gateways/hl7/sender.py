"""The result sender: delivers the outbox (``telenet.services.outbox``) to each HIS as ORU^R01 over MLLP.

Each round leases the deliverable rows (the oldest pending one per destination and patient), then talks
to every destination at once, one connection each, one message at a time: build the ORU in the process
pool, send it, wait for the ACK. Only an AA whose MSA-2 is the message's MSH-10 marks it delivered; AR
dead-letters it; a timeout, a connection error, an AE or an unreadable answer is retried with backoff
until the attempt limit. The state lives in the database, so a restart (or another process) carries on
where this one stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from gateways.hl7 import work
from gateways.hl7.codec import AckInfo, InvalidAck
from gateways.hl7.mllp import FrameError, frame, read_frame
from telenet import tls
from telenet.config import Settings
from telenet.domain.sla import Clock
from telenet.services import outbox
from telenet.services.exclusive import run_exclusive
from telenet.services.hub import Hub
from telenet.services.outbox import OutboxClaim, RetryPolicy
from telenet.store.write_gate import log_failure
from telenet.waits import within, woken

log = logging.getLogger(__name__)

Runner = Callable[..., Awaitable[Any]]

POLL_SECONDS = 1.0
"""Longest sleep between rounds: picks up rows written by other processes and leases that ran out."""


class TransportError(Exception):
    """The destination could not be reached, or did not answer in time: an outage, not a refusal."""


class ResultSender:
    def __init__(self, hub: Hub, settings: Settings, run: Runner, *, clock: Clock | None = None) -> None:
        self.hub = hub
        self.run = run
        self.clock = clock or hub.clock
        self.timeout = settings.hl7_ack_timeout_seconds
        self.max_size = settings.hl7_max_message_bytes
        self.policy = RetryPolicy(
            settings.hl7_send_max_attempts, settings.hl7_send_backoff_seconds, settings.hl7_send_backoff_max_seconds
        )
        self.owner = f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_seconds = 2 * self.timeout + 30
        self._wake = asyncio.Event()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._seen_enqueued = outbox.enqueued()
        self._task: asyncio.Task[None] | None = None
        self._up: dict[tuple[str, int], bool] = {}
        self.delivered = 0
        self.outbound = tls.OutboundTLS(settings, default_tls=settings.hl7_send_tls)

    def start(self) -> None:
        """Run the delivery loop; with several hub processes on PostgreSQL, in one of them at a time."""
        self.hub.on_commit.append(self._committed)
        engine = self.hub.engine
        job = run_exclusive(engine, "hl7-sender", self._loop) if engine is not None else self._loop()
        self._task = asyncio.create_task(job, name="hl7-sender")

    def _committed(self) -> None:
        # Every commit of the hub lands here; only those that queued a result are worth a round.
        enqueued = outbox.enqueued()
        if enqueued != self._seen_enqueued:
            self._seen_enqueued = enqueued
            self._wake.set()

    async def stop(self) -> None:
        """Let the current round finish (a task cancelled inside a database call can leave SQLite locked),
        then cancel what is left, and hand the leases back."""
        with contextlib.suppress(ValueError):
            self.hub.on_commit.remove(self._committed)
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await woken(self._stopped, min(self.timeout, 5.0) + 1.0)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await outbox.release_leases(self.hub, self.owner)
        except Exception:
            log.exception("hl7: could not release the sender's leases (they run out on their own)")

    async def _loop(self) -> None:
        # This process now holds the sender's exclusive lock: leases of any other sender are a dead process's.
        await outbox.release_leases(self.hub, None)
        while not self._stopping:
            try:
                sent = await self.run_once()
            except Exception:
                log_failure(log, "hl7: sender round failed")
                sent = 0
            if not sent and not self._stopping:
                await self._sleep()
        self._stopped.set()
        await asyncio.Event().wait()  # parked until cancelled, so that run_exclusive does not start it again

    async def _sleep(self) -> None:
        delay = POLL_SECONDS
        due = await outbox.next_due_at(self.hub)
        if due is not None:
            delay = min(delay, max((due - self.clock.now()).total_seconds(), 0.01))
        self._wake.clear()
        await woken(self._wake, delay)

    async def run_once(self) -> int:
        """One round: lease what is deliverable and try each destination; returns how many were tried."""
        claims = await outbox.claim_due(
            self.hub, owner=self.owner, now=self.clock.now(), lease_seconds=self.lease_seconds, limit=200
        )
        by_destination: dict[tuple[str, int], list[OutboxClaim]] = {}
        for claim in claims:
            by_destination.setdefault((claim.destination_host, claim.destination_port), []).append(claim)
        await asyncio.gather(*(self._deliver(dest, items) for dest, items in by_destination.items()))
        return len(claims)

    async def _deliver(self, destination: tuple[str, int], claims: list[OutboxClaim]) -> None:
        host, port = destination
        streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            for i, claim in enumerate(claims):
                if self._stopping:
                    return  # the rest keep their lease until stop() hands it back
                message = await self.run(
                    work.build_result, claim.payload, claim.message_control_id, claim.receiving_facility, self._now()
                )
                try:
                    if streams is None:
                        streams = await self._connect(host, port)
                    answer = await self._exchange(streams, message)
                except TransportError as exc:
                    await self._outage(destination, str(exc))
                    await outbox.mark_failed(self.hub, claim, owner=self.owner, error=str(exc), policy=self.policy)
                    for later in claims[i + 1 :]:
                        # Not tried this round: back off with the destination, without spending an attempt.
                        await outbox.mark_failed(
                            self.hub, later, owner=self.owner, error=str(exc), policy=self.policy, attempted=False
                        )
                    return
                await self._answered(destination)
                await self._settle(claim, message, answer)
        finally:
            if streams is not None:
                streams[1].close()
                with contextlib.suppress(Exception):
                    await streams[1].wait_closed()

    def _now(self) -> datetime:
        return self.clock.now()

    async def _connect(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            context, server_name = self.outbound.for_destination(host, port)
            if context is not None:
                connecting = asyncio.open_connection(host, port, ssl=context, server_hostname=server_name)
            else:
                connecting = asyncio.open_connection(host, port)
            return await within(connecting, self.timeout)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise TransportError(f"cannot connect to {host}:{port}: {exc or type(exc).__name__}") from None

    async def _exchange(self, streams: tuple[asyncio.StreamReader, asyncio.StreamWriter], message: bytes) -> bytes:
        reader, writer = streams
        try:
            writer.write(frame(message))
            await writer.drain()
            answer = await within(read_frame(reader, max_size=self.max_size), self.timeout)
        except TimeoutError:
            raise TransportError(f"no ACK within {self.timeout:g} s") from None
        except (OSError, FrameError) as exc:
            raise TransportError(f"connection failed: {exc or type(exc).__name__}") from None
        if answer is None:
            raise TransportError("the HIS closed the connection without an ACK")
        return answer

    async def _settle(self, claim: OutboxClaim, message: bytes, raw_ack: bytes) -> None:
        try:
            ack: AckInfo = await self.run(work.read_ack, raw_ack)
        except InvalidAck as exc:
            await self._failed(claim, f"unreadable ACK: {exc}")
            return
        if ack.control_id_acked != claim.message_control_id:
            await self._failed(claim, f"ACK for {ack.control_id_acked!r}, not for {claim.message_control_id!r}")
        elif ack.ack_code == "AA":
            if await outbox.mark_delivered(self.hub, claim, owner=self.owner):
                self.delivered += 1
        elif ack.ack_code in ("AR", "CR"):
            reason = f"HIS refused it ({ack.ack_code}{f' {ack.error_code}' if ack.error_code else ''}): {ack.text}"
            await outbox.mark_failed(
                self.hub, claim, owner=self.owner, error=reason, policy=self.policy, refused=True, message=message
            )
        else:
            await self._failed(claim, f"HIS answered {ack.ack_code}: {ack.text or 'no reason given'}", message)

    async def _failed(self, claim: OutboxClaim, error: str, message: bytes | None = None) -> None:
        log.warning("hl7: ORU %s not accepted: %s", claim.message_control_id, error)
        await outbox.mark_failed(self.hub, claim, owner=self.owner, error=error, policy=self.policy, message=message)

    async def _outage(self, destination: tuple[str, int], error: str) -> None:
        if self._up.get(destination, True):
            await outbox.destination_failed(self.hub, destination[0], destination[1], error)
            self._up[destination] = False

    async def _answered(self, destination: tuple[str, int]) -> None:
        if not self._up.get(destination, False):
            await outbox.destination_ok(self.hub, destination[0], destination[1])
            self._up[destination] = True
