"""From an association thread to the event loop: database work runs as service coroutines on the loop and
the thread waits for the answer, bounded in time. Never a session on a thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from gateways.dicom.status import Busy

P = ParamSpec("P")
T = TypeVar("T")


class LoopBridge:
    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float = 30.0) -> None:
        self.loop = loop
        self.timeout = timeout
        self.closed = False

    def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on the loop and wait for its result (re-raising its exception)."""
        if self.closed:
            raise Busy("the hub is shutting down")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            raise RuntimeError("LoopBridge.call from the event loop thread would deadlock")

        async def run() -> T:
            return await fn(*args, **kwargs)

        future = asyncio.run_coroutine_threadsafe(run(), self.loop)
        try:
            return future.result(self.timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise Busy(f"the hub did not answer within {self.timeout:g} s") from None
