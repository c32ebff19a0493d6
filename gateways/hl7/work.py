"""The CPU-bound HL7 work the gateway hands to its process pool: top-level functions of picklable values.

hl7apy takes milliseconds per message; run on the event loop it would stall HTTP and WebSocket traffic
for every HL7 burst. Each function does one round trip's worth of work (a parse comes back with its ACK
already built, since most messages are accepted).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from typing import Any

from gateways.hl7.ack import build_order_response
from gateways.hl7.codec import AckInfo, ErrorInfo, Inbound, build_ack_for, build_oru, parse_ack, parse_inbound
from gateways.hl7.er7 import PEER_CHARSETS, sniff
from gateways.hl7.mapping import refusal, report_result
from gateways.hl7.messages import Rejected
from gateways.hl7.status import build_order_status

_SAMPLE = (
    "MSH|^~\\&|HIS|WARMUP|TELENET|TELENET|20260101000000||ORM^O01^ORM_O01|W1|P|2.5|||||CHN|UNICODE UTF-8\r"
    "PID|1||W1^^^WARMUP^PI||张^三||19650312|M\r"
    "ORC|NW|W1\r"
    "OBR|1|W1||DX0001^胸部正位片^L|||||||||咳嗽||^^^CHEST|||||||||DX|||^^^^^R\r"
    "CON|1|IMG^知情同意^L||||||||W|A||20260101000000\r"
).encode()


def parse_with_ack(
    raw: bytes, ack_control_id: str, now: datetime, default_charset: str | None = None
) -> tuple[Inbound, bytes]:
    """Parse a message and build the ACK it gets if the service accepts it (AA), or the AR/AE the codec or
    the gateway already decided; ``default_charset`` reads a message without MSH-18."""
    message = parse_inbound(raw, default_charset)
    error = refusal(message)
    if error is not None and not isinstance(message, Rejected):
        ack = build_ack_for(message, message_control_id=ack_control_id, now=now, ack_code="AE", error=error)
    else:
        ack = build_ack_for(message, message_control_id=ack_control_id, now=now)
    return message, ack


def sniff_facility(raw: bytes) -> str | None:
    """MSH-4 of a raw message (ASCII in every set we read), to look up the facility's character set."""
    return sniff(raw).facility


def ack_with_error(message: Inbound, ack_control_id: str, now: datetime, error: ErrorInfo) -> bytes:
    """The AE for a message the service refused."""
    return build_ack_for(message, message_control_id=ack_control_id, now=now, ack_code="AE", error=error)


def ack_rejected(message: Inbound, ack_control_id: str, now: datetime, error: ErrorInfo) -> bytes:
    """The AR for a message refused before any processing (a sender speaking for another institution)."""
    return build_ack_for(message, message_control_id=ack_control_id, now=now, ack_code="AR", error=error)


def ack_with_text(message: Inbound, ack_control_id: str, now: datetime, text: str | None) -> bytes:
    """An AA that tells the sender something (MSA-3), e.g. that the order waits for consent."""
    return build_ack_for(message, message_control_id=ack_control_id, now=now, ack_code="AA", text=text)


def order_response(
    message: Inbound, ack_control_id: str, now: datetime, error: ErrorInfo | None, text: str | None
) -> bytes | None:
    """ORR^O02 / ORI^O24 for a facility that expects the order response message (None: not an order)."""
    return build_order_response(message, message_control_id=ack_control_id, now=now, error=error, text=text)


def oversize_rejection(
    head: bytes, size: int, max_size: int, ack_control_id: str, now: datetime
) -> tuple[Rejected, bytes]:
    """AR for a frame past the size limit, echoing whatever MSH-10 the start of the frame shows."""
    header = sniff(head)
    rejected = Rejected(
        ack_code="AR",
        reason=f"message larger than {max_size} bytes ({size} seen); the connection is closed",
        error_location=None,
        message_control_id=header.message_control_id,
        facility=header.facility,
        version=header.version,
        raw_text=None,
        error_code=207,
        message_type=header.message_type,
        sending_application=header.sending_application,
    )
    return rejected, build_ack_for(rejected, message_control_id=ack_control_id, now=now)


def build_result(payload: dict[str, Any], message_control_id: str, receiving_facility: str, now: datetime) -> bytes:
    """The ORU^R01 of an outbox row, or the ORM^O01 (ORC-1 SC) of an order status row."""
    if payload.get("message") == "status":
        return build_order_status(
            payload, message_control_id=message_control_id, receiving_facility=receiving_facility, now=now
        )
    return build_oru(
        report_result(payload),
        message_control_id=message_control_id,
        receiving_facility=receiving_facility,
        now=now,
        charset=PEER_CHARSETS.get(payload.get("charset") or "UTF-8", "utf-8"),
    )


def read_ack(raw: bytes) -> AckInfo:
    """The HIS's answer to an ORU (raises ``InvalidAck``)."""
    return parse_ack(raw)


def warm_up() -> int:
    """Load hl7apy's reference tables in a fresh worker, so the first real message is not the slow one."""
    parse_with_ack(_SAMPLE, "WARMUP", datetime(2026, 1, 1, tzinfo=UTC))
    return os.getpid()


WORKER_NICENESS = 10
"""Parsing is throughput work; the hub's event loop is latency work. Niced workers leave the CPU to the loop
when both want it (no effect when the machine has cores to spare)."""


def _start_worker() -> None:
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)
    warm_up()


def make_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes forked from a forkserver that has this module (and hl7apy) imported:
    no fork of the running event loop and its threads, and a fast start for each worker."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["gateways.hl7.work"])
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start_worker)
