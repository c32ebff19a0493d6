"""MLLP framing (VT payload FS CR) on asyncio streams, bytes only.

Parsing is somebody else's job (``codec``); idle timeouts are the server's
(``asyncio.wait_for`` around :func:`read_frame`). Memory stays bounded: a frame is read in
pieces no larger than the ``StreamReader`` limit and abandoned as soon as it passes ``max_size``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

__all__ = [
    "CR",
    "DEFAULT_MAX_SIZE",
    "FS",
    "HEAD_BYTES",
    "VT",
    "FrameError",
    "FrameTooLarge",
    "IncompleteFrame",
    "MLLPReader",
    "frame",
    "read_frame",
]

log = logging.getLogger(__name__)

VT = b"\x0b"
FS = b"\x1c"
CR = b"\x0d"
_END = FS + CR
DEFAULT_MAX_SIZE = 1 << 20
HEAD_BYTES = 4096


class FrameError(Exception):
    """The byte stream broke MLLP framing; the connection should be closed."""


class FrameTooLarge(FrameError):
    """A frame grew past ``max_size``; ``size`` is how many payload bytes were seen when we gave up.

    ``head`` is the start of the frame (at most :data:`HEAD_BYTES`), enough to read MSH and echo MSH-10.
    """

    def __init__(self, size: int, max_size: int, head: bytes = b"") -> None:
        super().__init__(f"MLLP frame exceeds {max_size} bytes ({size} seen so far)")
        self.size = size
        self.max_size = max_size
        self.head = head


class IncompleteFrame(FrameError):
    """The peer closed the stream after a VT but before FS CR; ``partial`` is what arrived."""

    def __init__(self, partial: bytes) -> None:
        super().__init__(f"EOF inside an MLLP frame after {len(partial)} bytes")
        self.partial = partial


def frame(payload: bytes) -> bytes:
    """Wrap one message in MLLP start and end blocks."""
    return VT + payload + _END


@dataclass(slots=True)
class _Read:
    payload: bytes | None
    garbage: int


async def _skip_to_start(reader: asyncio.StreamReader) -> tuple[bool, int]:
    """Consume bytes up to and including the next VT; return (found, garbage bytes skipped)."""
    garbage = 0
    while True:
        try:
            chunk = await reader.readuntil(VT)
        except asyncio.IncompleteReadError as exc:
            return False, garbage + len(exc.partial)
        except asyncio.LimitOverrunError as exc:
            # No VT within the reader's limit: drop what was scanned and keep looking.
            dropped = await reader.readexactly(exc.consumed)
            garbage += len(dropped)
            continue
        return True, garbage + len(chunk) - 1


async def _read_body(reader: asyncio.StreamReader, max_size: int) -> tuple[bytes, int]:
    """Read up to and including FS CR; return (payload, garbage bytes dropped by a restarted frame)."""
    parts: list[bytes] = []
    size = 0
    while True:
        try:
            chunk = await reader.readuntil(_END)
            done = True
        except asyncio.IncompleteReadError as exc:
            raise IncompleteFrame(b"".join([*parts, exc.partial])) from None
        except asyncio.LimitOverrunError as exc:
            # The terminator is not within the reader's limit: take what was scanned and go on.
            # ``consumed`` never splits a FS CR pair that is already buffered.
            chunk = await reader.readexactly(max(exc.consumed, 1))
            done = False
        size += len(chunk) - (len(_END) if done else 0)
        parts.append(chunk)
        if size > max_size:
            raise FrameTooLarge(size, max_size, _head(parts))
        if done:
            break
    body = b"".join(parts)[: -len(_END)]
    restart = body.rfind(VT)
    if restart >= 0:
        # A sender that gave up on a frame and started over: keep the last frame only.
        return body[restart + 1 :], restart + 1
    return body, 0


def _head(parts: list[bytes]) -> bytes:
    head = bytearray()
    for part in parts:
        head += part[: HEAD_BYTES - len(head)]
        if len(head) >= HEAD_BYTES:
            break
    return bytes(head)


async def _read(reader: asyncio.StreamReader, max_size: int) -> _Read:
    found, garbage = await _skip_to_start(reader)
    if not found:
        return _Read(None, garbage)
    payload, dropped = await _read_body(reader, max_size)
    return _Read(payload, garbage + dropped)


def _log_garbage(garbage: int) -> None:
    if garbage:
        log.warning("mllp: skipped %d bytes outside a frame", garbage)


async def read_frame(reader: asyncio.StreamReader, *, max_size: int = DEFAULT_MAX_SIZE) -> bytes | None:
    """Return the next frame's payload, or None at a clean EOF (only garbage, if anything, left).

    Bytes before a VT are skipped and logged. Raises :class:`FrameTooLarge` when the payload passes
    ``max_size`` and :class:`IncompleteFrame` at EOF inside a frame; after either, the stream is
    mid-frame and the connection should be closed.
    """
    result = await _read(reader, max_size)
    _log_garbage(result.garbage)
    return result.payload


class MLLPReader:
    """A per-connection reader: frames in order, with counters for the server's metrics and logs."""

    def __init__(self, reader: asyncio.StreamReader, *, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.reader = reader
        self.max_size = max_size
        self.frames = 0
        self.garbage_bytes = 0

    async def read(self) -> bytes | None:
        """Like :func:`read_frame`, counting frames and skipped bytes."""
        result = await _read(self.reader, self.max_size)
        if result.garbage:
            self.garbage_bytes += result.garbage
            _log_garbage(result.garbage)
        if result.payload is not None:
            self.frames += 1
        return result.payload

    def __aiter__(self) -> MLLPReader:
        return self

    async def __anext__(self) -> bytes:
        payload = await self.read()
        if payload is None:
            raise StopAsyncIteration
        return payload
