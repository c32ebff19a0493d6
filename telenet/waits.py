"""Waiting with a time limit without losing a cancellation.

Python 3.11's ``asyncio.wait_for`` returns the awaited result when its task is cancelled in the same loop turn
in which that result arrives: the cancellation is swallowed (CPython gh-86296, fixed in 3.12). A worker loop
such as ``while True: await asyncio.wait_for(wake.wait(), poll)`` that is cancelled just as it is woken (a
commit wakes the live channel's broker while the app shuts down) then runs on, polling, and whoever awaits its
end waits forever: a hub that never stops, a test teardown that hung for 300 s. ``asyncio.timeout`` has no such
window, so the product code waits through these two helpers, never through ``asyncio.wait_for``
(``tests/unit/test_waits.py`` checks both).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def woken(event: asyncio.Event, seconds: float | None) -> bool:
    """Wait until ``event`` is set or ``seconds`` pass (``None``: no limit); whether it is set."""
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True


async def within(awaitable: Awaitable[T], seconds: float | None) -> T:
    """``await awaitable``, raising ``TimeoutError`` after ``seconds`` (``None``: no limit)."""
    async with asyncio.timeout(seconds):
        return await awaitable
