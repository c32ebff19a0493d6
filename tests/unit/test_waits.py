"""Waits with a time limit that never swallow a cancellation (``telenet.waits``), and the rule that the product
code waits through them: Python 3.11's ``asyncio.wait_for`` loses a cancellation that arrives in the loop turn
its result does, which kept the live channel's broker polling after the app had cancelled it."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest

from telenet.waits import within, woken

ROOT = Path(__file__).resolve().parents[2]


async def test_a_worker_cancelled_in_the_turn_it_is_woken_ends() -> None:
    wake = asyncio.Event()
    rounds = 0

    async def worker() -> None:
        nonlocal rounds
        while True:
            await woken(wake, 0.05)
            wake.clear()
            rounds += 1

    task = asyncio.create_task(worker())
    await asyncio.sleep(0)  # the worker waits for its event
    wake.set()
    task.cancel()  # the same turn: the wait's result and the cancellation arrive together
    done, _ = await asyncio.wait([task], timeout=2)
    assert done == {task}, f"the worker ran on for {rounds} rounds after it was cancelled"
    assert task.cancelled()


async def test_woken_says_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert await woken(event, 0.01) is False
    event.set()
    assert await woken(event, 0.01) is True
    assert await woken(event, None) is True


async def test_within_answers_or_raises_timeout_error() -> None:
    async def slow() -> str:
        await asyncio.sleep(5)
        return "late"

    async def quick() -> str:
        return "now"

    assert await within(quick(), 1) == "now"
    with pytest.raises(TimeoutError):
        await within(slow(), 0.01)


def _wait_for_calls(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and (
            (isinstance(node.func, ast.Attribute) and node.func.attr == "wait_for")
            or (isinstance(node.func, ast.Name) and node.func.id == "wait_for")
        )
    ]


def test_the_product_code_never_waits_through_asyncio_wait_for() -> None:
    found = {
        str(path.relative_to(ROOT)): lines
        for folder in ("telenet", "gateways")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if (lines := _wait_for_calls(path))
    }
    assert found == {}, f"use telenet.waits.woken or within instead of asyncio.wait_for: {found}"
