"""The forwarding worker: claims due jobs from the durable queue (telenet.services.forwarding) and sends each
study to its center's PACS as a C-STORE SCU, one association per job, from the stored files without
decoding them (``STORE_SEND_CHUNKED_DATASET``). Sending runs on a thread; the queue lives in the database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

from pynetdicom import AE, evt
from pynetdicom.presentation import build_context

from gateways.dicom.node import nodelay
from telenet import tls
from telenet.config import Settings
from telenet.services import forwarding
from telenet.services.forwarding import ForwardTask, RetryPolicy
from telenet.services.hub import Hub
from telenet.store.write_gate import log_failure
from telenet.waits import woken

log = logging.getLogger(__name__)


class SendError(Exception):
    def __init__(self, message: str, sent: int = 0) -> None:
        super().__init__(message)
        self.sent = sent


def send_study(
    task: ForwardTask,
    calling_ae: str,
    tls_context: ssl.SSLContext | None = None,
    *,
    timeout: float = 30.0,
    server_name: str | None = None,
) -> int:
    """Send every file of ``task`` over one association (over TLS with ``tls_context``, verifying the
    destination as ``server_name``, by default its host); the number sent, or SendError."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = timeout
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    ae.maximum_pdu_size = 0
    syntaxes: dict[str, set[str]] = {}
    for item in task.files:
        syntaxes.setdefault(item.sop_class_uid, set()).add(item.transfer_syntax_uid)
    if len(syntaxes) > 128:
        raise SendError("a study with more than 128 SOP classes cannot be sent on one association")
    # One context per (class, syntax): chunked sending needs the exact syntax of each file accepted.
    contexts = [build_context(uid, [ts]) for uid, tss in sorted(syntaxes.items()) for ts in sorted(tss)][:128]
    ae.requested_contexts = contexts
    assoc = ae.associate(
        task.host,
        task.port,
        ae_title=task.ae_title,
        evt_handlers=[(evt.EVT_CONN_OPEN, nodelay)],
        tls_args=(tls_context, server_name or task.host) if tls_context is not None else None,
    )
    if not assoc.is_established:
        raise SendError(f"association with {task.destination} failed (rejected, aborted or no answer)")
    sent = 0
    try:
        for item in task.files:
            status = assoc.send_c_store(item.path)
            code = getattr(status, "Status", None)
            if code is None:
                raise SendError(f"no answer to C-STORE of {item.sop_instance_uid}", sent)
            if code not in (0x0000, 0xB000, 0xB007, 0xB006):
                comment = getattr(status, "ErrorComment", "")
                raise SendError(f"C-STORE of {item.sop_instance_uid} failed: 0x{code:04X} {comment}".strip(), sent)
            sent += 1
    except (OSError, ValueError, AttributeError, RuntimeError) as exc:
        raise SendError(f"sending to {task.destination} failed: {exc}", sent) from exc
    finally:
        if assoc.is_established:
            assoc.release()
        else:
            assoc.abort()
    return sent


class Forwarder:
    def __init__(
        self,
        hub: Hub,
        policy: RetryPolicy,
        calling_ae: str,
        *,
        poll_seconds: float = 1.0,
        outbound: tls.OutboundTLS | None = None,
    ) -> None:
        self.outbound = outbound
        self.hub = hub
        self.policy = policy
        self.calling_ae = calling_ae
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()

    @classmethod
    def from_settings(cls, hub: Hub, settings: Settings) -> Forwarder:
        policy = RetryPolicy(
            max_attempts=settings.dicom_forward_max_attempts,
            backoff_seconds=settings.dicom_forward_backoff_seconds,
            backoff_max_seconds=settings.dicom_forward_backoff_max_seconds,
        )
        poll = max(0.05, min(1.0, settings.dicom_forward_backoff_seconds / 2))
        outbound = tls.OutboundTLS(settings, default_tls=settings.dicom_forward_tls)
        return cls(hub, policy, settings.dicom_ae_title, poll_seconds=poll, outbound=outbound)

    def _wake_up(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled: ensure jobs exist, then claim and send due jobs; sleep until woken or polled."""
        self.hub.on_commit.append(self._wake_up)
        try:
            with contextlib.suppress(Exception):
                # This process holds the forwarder's exclusive lock now: what is "sending" was a dead one's.
                await forwarding.release_orphans(self.hub)
                await forwarding.ensure_jobs(self.hub)
            passes = 0
            while True:
                passes += 1
                if passes % 60 == 0:  # completions that waited for consent, crashes between commit and enqueue
                    with contextlib.suppress(Exception):
                        await forwarding.ensure_jobs(self.hub)
                try:
                    worked = await self.run_once()
                except Exception:
                    log_failure(log, "forwarding pass failed")
                    worked = 0
                if worked:
                    continue
                self._wake.clear()
                await woken(self._wake, self.poll_seconds)
        finally:
            with contextlib.suppress(ValueError):
                self.hub.on_commit.remove(self._wake_up)

    async def run_once(self) -> int:
        tasks = await forwarding.claim_due(self.hub, self.policy)
        if not tasks:
            return 0
        await asyncio.gather(*(self._attempt(task) for task in tasks))
        return len(tasks)

    async def _attempt(self, task: ForwardTask) -> None:
        try:
            context, name = self.outbound.for_destination(task.host, task.port) if self.outbound else (None, None)
            sent = await asyncio.to_thread(send_study, task, self.calling_ae, context, server_name=name)
        except SendError as exc:
            state = await forwarding.failed(self.hub, task, str(exc), self.policy, sent=exc.sent)
            log.info("forward of %s to %s failed (%s): %s", task.study_instance_uid, task.destination, state, exc)
            return
        except Exception as exc:  # an unexpected error is a failed attempt, not a dead worker
            log.exception("forward of %s crashed", task.study_instance_uid)
            await forwarding.failed(self.hub, task, f"{type(exc).__name__}: {exc}", self.policy)
            return
        await forwarding.delivered(self.hub, task, sent)
        log.info("forwarded study %s (%d instances) to %s", task.study_instance_uid, sent, task.destination)
