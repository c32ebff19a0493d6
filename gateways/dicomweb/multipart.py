"""multipart/related both ways: WADO-RS answers written part by part as the files are read (never a whole
file in memory), and STOW-RS bodies received part by part into temporary files with size limits."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from aiohttp import web
from aiohttp.multipart import BodyPartReader, MultipartReader

from gateways.dicomweb.media import BadRequest, PayloadTooLarge, UnsupportedMediaType, parse_media_type
from telenet.domain.errors import TelenetError

log = logging.getLogger(__name__)
CHUNK: Final = 1 << 20
SMALL: Final = 1 << 20
BATCH: Final = 8 << 20
WRITE: Final = 256 << 10
CRLF: Final = b"\r\n"
# Files held open at once by a sendfile response (a 1,000-instance study is sent in batches of these).
OPEN_AT_ONCE: Final = 64


@dataclass(frozen=True)
class Part:
    """One part to send: a file (or a slice of it) or bytes, with its Content-Type."""

    content_type: str
    path: str | None = None
    offset: int = 0
    length: int | None = None
    data: bytes | None = None
    location: str | None = None
    size: int | None = None  # the file's size when known (the index has it): no stat to decide how to read


def _read_slice(path: str, offset: int, length: int | None) -> list[bytes]:
    """A file slice in chunks of 1 MiB, read on a worker thread (at most 8 MiB per call)."""
    chunks = []
    with open(path, "rb") as fh:
        fh.seek(offset)
        left = length
        for _ in range(8):
            want = CHUNK if left is None else min(CHUNK, left)
            if want <= 0:
                break
            chunk = fh.read(want)
            if not chunk:
                break
            chunks.append(chunk)
            if left is not None:
                left -= len(chunk)
    return chunks


async def _file_chunks(path: str, offset: int, length: int | None) -> AsyncIterator[bytes]:
    position, left = offset, length
    while left is None or left > 0:
        chunks = await asyncio.to_thread(_read_slice, path, position, left)
        if not chunks:
            return
        for chunk in chunks:
            yield chunk
            position += len(chunk)
            if left is not None:
                left -= len(chunk)
        if sum(map(len, chunks)) < 8 * CHUNK:
            return


def _read_small(parts: list[Part]) -> list[bytes]:
    """Whole small file parts, read in one worker-thread call (each at most ``SMALL`` bytes)."""
    out = []
    for part in parts:
        assert part.path is not None
        with open(part.path, "rb") as fh:
            fh.seek(part.offset)
            out.append(fh.read(-1 if part.length is None else part.length))
    return out


def _part_size(part: Part) -> int:
    assert part.path is not None
    if part.length is not None:
        return part.length
    size = part.size if part.size is not None else os.stat(part.path).st_size
    return size - part.offset


async def _batches(parts: AsyncIterator[Part]) -> AsyncIterator[list[tuple[Part, bytes | None]]]:
    """Parts with their bytes: small files (at most 1 MiB each) read together, up to 8 MiB per thread hop;
    larger files are left to be streamed in chunks (None)."""
    batch: list[Part] = []
    batch_bytes = 0

    async def flush() -> list[tuple[Part, bytes | None]]:
        nonlocal batch, batch_bytes
        taken, batch, batch_bytes = batch, [], 0
        data = await asyncio.to_thread(_read_small, taken) if taken else []
        return list(zip(taken, data, strict=True))

    async for part in parts:
        if part.data is not None:
            yield [*await flush(), (part, part.data)]
            continue
        size = _part_size(part)
        if size <= SMALL:
            batch.append(part)
            batch_bytes += size
            if batch_bytes >= BATCH:
                yield await flush()
        else:
            yield [*await flush(), (part, None)]
    if batch:
        yield await flush()


class _Writer:
    """Response bytes in writes of about ``WRITE`` bytes: small pieces joined, large ones sliced. One huge
    write would sit in the transport's buffer, which asyncio (3.11) shifts down after every partial send:
    a copy of the rest of the buffer per send. Writes of this size are sent at once, each awaiting drain."""

    def __init__(self, response: web.StreamResponse) -> None:
        self.response = response
        self.pending: list[bytes] = []
        self.size = 0

    async def add(self, data: bytes) -> None:
        if len(data) >= WRITE:
            await self.flush()
            view = memoryview(data)
            for start in range(0, len(view), WRITE):
                await self.response.write(view[start : start + WRITE])
            return
        self.pending.append(data)
        self.size += len(data)
        if self.size >= WRITE:
            await self.flush()

    async def flush(self) -> None:
        if self.pending:
            data, self.pending, self.size = b"".join(self.pending), [], 0
            await self.response.write(data)


class StoredFileMissing(TelenetError):
    """An indexed instance whose file is not on disk (or shorter than the index says): answered before any
    byte of the response is sent."""

    code = "stored-file-missing"
    status = 500


def _file_lengths(parts: list[Part]) -> list[int]:
    """Each part's byte count (a file's from ``stat``, checked against the slice asked for)."""
    lengths = []
    for part in parts:
        if part.data is not None:
            lengths.append(len(part.data))
            continue
        assert part.path is not None
        try:
            size = os.stat(part.path).st_size
        except OSError:
            raise StoredFileMissing("a stored file of this resource is missing") from None
        length = size - part.offset if part.length is None else part.length
        if length < 0 or part.offset + length > size:
            raise StoredFileMissing("a stored file of this resource is shorter than indexed")
        lengths.append(length)
    return lengths


def _open_files(parts: list[Part]) -> list[IO[bytes] | None]:
    files: list[IO[bytes] | None] = []
    try:
        for part in parts:
            files.append(open(part.path, "rb") if part.data is None and part.path else None)
    except OSError:
        for fh in files:
            if fh is not None:
                fh.close()
        raise
    return files


async def _sendfile(
    loop: asyncio.AbstractEventLoop, transport: asyncio.BaseTransport, fh: IO[bytes], offset: int, count: int
) -> int:
    """``count`` bytes of ``fh`` from ``offset`` to the socket: first straight by ``os.sendfile`` while the
    socket takes them (no future, no selector registration: asyncio's ``loop.sendfile`` costs both per call,
    which for a study of small files was most of the time), the rest by ``loop.sendfile``, which waits for
    the socket. Over TLS (no plain socket) all of it by ``loop.sendfile``, which then reads and writes."""
    sent = 0
    sock = transport.get_extra_info("socket")
    direct = sock is not None and transport.get_extra_info("ssl_object") is None
    if direct and isinstance(transport, asyncio.WriteTransport) and transport.get_write_buffer_size() == 0:
        fd, file_fd = sock.fileno(), fh.fileno()
        while sent < count:
            try:
                n = os.sendfile(fd, file_fd, offset + sent, count - sent)
            except (BlockingIOError, InterruptedError):
                break
            if n == 0:
                return sent  # end of file: shorter than measured
            sent += n
    if sent < count:
        sent += await loop.sendfile(transport, fh, offset + sent, count - sent)  # type: ignore[arg-type]
    return sent


async def _write_sliced(response: web.StreamResponse, data: bytes) -> None:
    view = memoryview(data)
    for start in range(0, len(view), WRITE):
        await response.write(view[start : start + WRITE])


async def send_multipart(request: web.Request, parts: list[Part], part_type: str) -> web.StreamResponse:
    """A ``multipart/related; type=part_type`` response of parts known in advance, with a Content-Length:
    each file part goes from the page cache to the socket by ``sendfile`` (asyncio reads and writes it in
    chunks where it cannot, as over TLS), never through Python's memory; bytes parts are written as they are.
    A file that is missing is a problem answer before anything is sent."""
    boundary = uuid.uuid4().hex
    lengths = await asyncio.to_thread(_file_lengths, parts)
    heads = []
    for part in parts:
        head = f"--{boundary}\r\nContent-Type: {part.content_type}\r\n"
        if part.location:
            head += f"Content-Location: {part.location}\r\n"
        heads.append(head.encode() + CRLF)
    closing = f"--{boundary}--\r\n".encode()
    response = web.StreamResponse(status=200)
    response.headers["Content-Type"] = f'multipart/related; type="{part_type}"; boundary={boundary}'
    response.content_length = sum(map(len, heads)) + sum(lengths) + 2 * len(parts) + len(closing)
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    pending = b""  # bytes to write before the next file: the last part's CRLF and the next part's head
    for start in range(0, len(parts), OPEN_AT_ONCE):
        chunk = parts[start : start + OPEN_AT_ONCE]
        files = await asyncio.to_thread(_open_files, chunk)
        try:
            for offset, (part, fh) in enumerate(zip(chunk, files, strict=True)):
                index = start + offset
                if fh is None:
                    assert part.data is not None
                    pending += heads[index] + part.data + CRLF
                    if len(pending) >= WRITE:
                        await _write_sliced(response, pending)
                        pending = b""
                    continue
                await response.write(pending + heads[index])
                pending = CRLF
                transport = request.transport
                if transport is None or transport.is_closing():
                    raise ConnectionResetError("the client went away")
                sent = await _sendfile(loop, transport, fh, part.offset, lengths[index])
                if sent != lengths[index]:  # the file shrank after it was measured: the body cannot be whole
                    transport.abort()
                    raise ConnectionResetError("a stored file changed while it was sent")
        finally:
            for fh in files:
                if fh is not None:
                    fh.close()
    await _write_sliced(response, pending + closing)
    await response.write_eof()
    return response


async def stream_multipart(request: web.Request, parts: AsyncIterator[Part], part_type: str) -> web.StreamResponse:
    """A ``multipart/related; type=part_type`` response written while the parts are produced (chunked: for
    parts whose bytes are made on the way, as re-encoded instances)."""
    boundary = uuid.uuid4().hex
    response = web.StreamResponse(status=200)
    response.headers["Content-Type"] = f'multipart/related; type="{part_type}"; boundary={boundary}'
    await response.prepare(request)
    out = _Writer(response)
    async for batch in _batches(parts):
        for part, data in batch:
            head = f"--{boundary}\r\nContent-Type: {part.content_type}\r\n"
            if part.location:
                head += f"Content-Location: {part.location}\r\n"
            await out.add(head.encode() + CRLF)
            if data is not None:
                await out.add(data)
                await out.add(CRLF)
                continue
            assert part.path is not None
            async for chunk in _file_chunks(part.path, part.offset, part.length):
                await out.add(chunk)
            await out.add(CRLF)
    await out.add(f"--{boundary}--\r\n".encode())
    await out.flush()
    await response.write_eof()
    return response


# --------------------------------------------------------------------------------------------------
# Receiving (STOW-RS)
# --------------------------------------------------------------------------------------------------


class _Reader(MultipartReader):
    """aiohttp's reader, taking boundaries longer than RFC 2046's 70 characters (Orthanc sends 73)."""

    def _get_boundary(self) -> str:
        boundary = str(self._mimetype.parameters["boundary"])
        if not 0 < len(boundary) <= 200:
            raise ValueError("the boundary is empty or longer than 200 characters")
        return boundary


@dataclass
class ReceivedPart:
    content_type: str
    path: Path
    size: int


@dataclass
class Received:
    """The parts of a STOW-RS body, each in a temporary file; ``discard()`` removes what is left."""

    parts: list[ReceivedPart] = field(default_factory=list)

    def discard(self) -> None:
        for part in self.parts:
            part.path.unlink(missing_ok=True)


def check_stow_content_type(header: str | None) -> None:
    media = parse_media_type(header or "")
    if media.type != "multipart/related":
        raise UnsupportedMediaType(
            'STOW-RS takes multipart/related; type="application/dicom"', code="unsupported-media-type"
        )
    part_type = media.part_type
    if part_type is not None and part_type.lower() != "application/dicom":
        raise UnsupportedMediaType(
            f"parts of type {part_type} are not supported: send application/dicom instances",
            code="unsupported-media-type",
        )
    if "boundary" not in media.params:
        raise BadRequest("the multipart body has no boundary", code="bad-multipart")


async def receive_parts(
    request: web.Request, tmp_dir: Path, *, max_part_bytes: int, max_total_bytes: int, max_parts: int = 10_000
) -> Received:
    """Every part of the body into its own temporary file. A malformed body is 400, a part over
    ``max_part_bytes`` or a body over ``max_total_bytes`` 413; either way no file is left behind."""
    log.info("STOW-RS body of type %s", request.headers.get("Content-Type"))
    check_stow_content_type(request.headers.get("Content-Type"))
    received = Received()
    total = 0
    try:
        reader = _Reader(request.headers, request.content)
        for _ in range(max_parts + 1):
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                raise BadRequest("nested multipart bodies are not supported", code="bad-multipart")
            if len(received.parts) >= max_parts:
                raise PayloadTooLarge(f"more than {max_parts} parts", code="too-many-parts")
            fd, name = tempfile.mkstemp(dir=tmp_dir, suffix=".stow")
            path = Path(name)
            item = ReceivedPart(part.headers.get("Content-Type", "application/dicom"), path, 0)
            received.parts.append(item)
            with os.fdopen(fd, "wb") as out:
                while chunk := await part.read_chunk(CHUNK):
                    item.size += len(chunk)
                    total += len(chunk)
                    if item.size > max_part_bytes:
                        raise PayloadTooLarge(
                            f"part {len(received.parts)} is larger than {max_part_bytes} bytes",
                            code="instance-too-large",
                        )
                    if total > max_total_bytes:
                        raise PayloadTooLarge(f"the body is larger than {max_total_bytes} bytes", code="body-too-large")
                    out.write(chunk)
        if not received.parts:
            raise BadRequest("the multipart body has no parts", code="bad-multipart")
    except (PayloadTooLarge, BadRequest) as exc:
        log.info("STOW-RS body refused: %s", exc.message)
        received.discard()
        raise
    except (ValueError, AssertionError, RuntimeError) as exc:  # aiohttp's multipart parser on broken input
        received.discard()
        raise BadRequest(f"malformed multipart body: {exc}", code="bad-multipart") from None
    except BaseException:
        received.discard()
        raise
    return received
