"""MLLP framing, fed byte by byte into a StreamReader the way python-hl7's tests/test_mllp.py does."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateways.hl7.mllp import (
    FrameTooLarge,
    IncompleteFrame,
    MLLPReader,
    frame,
    read_frame,
)

MSG = "MSH|^~\\&|HIS|GX-TS-0101|TELENET|TELENET|20240315091500||ADT^A04|1|P|2.4\rPID|1||P1||张^三\r".encode()


def reader_with(*chunks: bytes, eof: bool = True, limit: int = 2**16) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=limit)
    for chunk in chunks:
        reader.feed_data(chunk)
    if eof:
        reader.feed_eof()
    return reader


def test_frame_wraps_payload() -> None:
    assert frame(b"abc") == b"\x0babc\x1c\x0d"
    assert frame(b"") == b"\x0b\x1c\x0d"


async def test_one_frame_then_clean_eof() -> None:
    reader = reader_with(frame(MSG))
    assert await read_frame(reader) == MSG
    assert await read_frame(reader) is None


async def test_empty_stream_is_clean_eof() -> None:
    assert await read_frame(reader_with()) is None


async def test_frame_split_across_feeds() -> None:
    reader = asyncio.StreamReader()
    task = asyncio.create_task(read_frame(reader))
    wire = frame(MSG)
    for i in range(len(wire)):  # one byte per feed: VT, payload, FS and CR all arrive alone
        reader.feed_data(wire[i : i + 1])
        await asyncio.sleep(0)
    assert await task == MSG


async def test_terminator_split_between_fs_and_cr() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b"\x0bABC\x1c")
    task = asyncio.create_task(read_frame(reader))
    await asyncio.sleep(0)
    assert not task.done()
    reader.feed_data(b"\x0d")
    assert await task == b"ABC"


async def test_several_frames_in_one_read() -> None:
    reader = reader_with(frame(b"one") + frame(MSG) + frame(b"three"))
    assert [await read_frame(reader) for _ in range(4)] == [b"one", MSG, b"three", None]


async def test_fs_without_cr_stays_in_payload() -> None:
    reader = reader_with(b"\x0ba\x1cb\x1c\x0d")
    assert await read_frame(reader) == b"a\x1cb"


async def test_garbage_between_frames_is_skipped_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    wire = b"junk" + frame(b"one") + b"\r\n" + frame(b"two") + b"trailing"
    mllp = MLLPReader(reader_with(wire))
    with caplog.at_level(logging.WARNING, logger="gateways.hl7.mllp"):
        frames = [payload async for payload in mllp]
    assert frames == [b"one", b"two"]
    assert mllp.frames == 2
    assert mllp.garbage_bytes == len(b"junk") + 2 + len(b"trailing")
    assert "skipped 4 bytes" in caplog.text


async def test_garbage_longer_than_reader_limit() -> None:
    mllp = MLLPReader(reader_with(b"x" * 5000 + frame(MSG), limit=1024))
    assert await mllp.read() == MSG
    assert mllp.garbage_bytes == 5000


async def test_restarted_frame_keeps_the_last_one() -> None:
    mllp = MLLPReader(reader_with(b"\x0bhalf a mess" + frame(b"whole")))
    assert await mllp.read() == b"whole"
    assert mllp.garbage_bytes == len(b"half a mess") + 1


async def test_frame_larger_than_reader_limit_within_max_size() -> None:
    payload = bytes(range(32, 127)) * 100  # 9.5 KB through a 1 KB reader buffer
    reader = reader_with(frame(payload) + frame(b"next"), limit=1024)
    assert await read_frame(reader, max_size=20_000) == payload
    assert await read_frame(reader) == b"next"


async def test_oversize_frame_raises_without_buffering_it_all() -> None:
    reader = asyncio.StreamReader(limit=1024)
    reader.feed_data(b"\x0b")

    async def flood() -> None:  # a peer sending 1 MB with no FS CR, 1 KB at a time
        for _ in range(1000):
            reader.feed_data(b"a" * 1000)
            await asyncio.sleep(0)

    sender = asyncio.create_task(flood())
    with pytest.raises(FrameTooLarge) as info:
        await read_frame(reader, max_size=4096)
    assert 4096 < info.value.size < 8192
    assert info.value.max_size == 4096
    assert not sender.done()  # gave up long before the megabyte arrived
    sender.cancel()


async def test_oversize_complete_frame_raises() -> None:
    reader = reader_with(frame(b"a" * 200))
    with pytest.raises(FrameTooLarge) as info:
        await read_frame(reader, max_size=100)
    assert info.value.size == 200


async def test_frame_exactly_max_size_is_accepted() -> None:
    assert await read_frame(reader_with(frame(b"a" * 100)), max_size=100) == b"a" * 100


async def test_eof_mid_frame() -> None:
    reader = reader_with(b"\x0bMSH|^~\\&|HIS")
    with pytest.raises(IncompleteFrame) as info:
        await read_frame(reader)
    assert info.value.partial == b"MSH|^~\\&|HIS"


async def test_eof_after_fs_before_cr() -> None:
    with pytest.raises(IncompleteFrame):
        await read_frame(reader_with(b"\x0bABC\x1c"))


async def test_idle_timeout_is_wait_for() -> None:
    reader = reader_with(b"\x0bpartial", eof=False)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(read_frame(reader), timeout=0.01)
