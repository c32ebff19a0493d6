"""Background jobs run in exactly one process at a time, and another takes over when the holder dies."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from sqlalchemy import text

from telenet.services.exclusive import lock_key, run_exclusive
from telenet.store.db import create_engine
from tests.conftest import POSTGRES_URL, needs_postgres

pytestmark = needs_postgres("advisory locks")


async def test_one_holder_and_takeover_when_it_dies() -> None:
    assert POSTGRES_URL
    engines = [create_engine(POSTGRES_URL) for _ in range(3)]
    running: list[int] = []
    name = f"test-job-{id(engines)}"

    def job(n: int) -> Any:
        async def loop() -> None:
            running.append(n)
            await asyncio.Event().wait()  # a job runs until it is cancelled

        return loop

    tasks = [
        asyncio.create_task(run_exclusive(e, name, job(n), retry_seconds=0.1, check_seconds=0.1))
        for n, e in enumerate(engines)
    ]
    try:
        for _ in range(50):
            if running:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert len(running) == 1, "exactly one process runs the job"
        holder = running[0]
        # The holder's backend dies (as when its process is SIGKILLed): the server frees the lock.
        async with engines[(holder + 1) % 3].connect() as conn:
            killed = await conn.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND objid = :lo AND granted"
                ),
                {"lo": lock_key(name) & 0xFFFFFFFF},
            )
        assert killed == 1
        for _ in range(100):
            if len(running) > 1:
                break
            await asyncio.sleep(0.05)
        assert len(running) == 2, f"the job restarts after its holder {holder} died: {running}"
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for engine in engines:
            await engine.dispose()
