"""From an association thread to the event loop: database work runs as service coroutines on the loop and
the thread waits for the answer, bounded in time. Never a session on a thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from gateways.dicom.status import Busy, LateAnswer

P = ParamSpec("P")
T = TypeVar("T")


class LoopBridge:
    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float = 30.0) -> None:
        self.loop = loop
        self.timeout = timeout
        self.closed = False

    def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on the loop and wait for its result (re-raising its exception); past the
        timeout it is cancelled and the caller gets Busy."""
        future = self._submit(fn, *args, **kwargs)
        try:
            return future.result(self.timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise Busy(f"the hub did not answer within {self.timeout:g} s") from None

    def call_to_the_end(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """As ``call``, but a call that outlives the timeout is not cancelled: it runs to its end on the loop
        (and must settle its own consequences there), and the caller gets LateAnswer. For writes whose outcome
        cannot be known once cancelled: a group member cancelled while its group commits is committed all the
        same. Busy (not LateAnswer) means ``fn`` never started."""
        future = self._submit(fn, *args, **kwargs)
        try:
            return future.result(self.timeout)
        except concurrent.futures.TimeoutError:
            raise LateAnswer(f"the hub did not answer within {self.timeout:g} s") from None

    def _submit(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> concurrent.futures.Future[T]:
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

        return asyncio.run_coroutine_threadsafe(run(), self.loop)
