"""Background jobs that must run in exactly one hub process at a time (sweeper, forwarders, outbox sender).

On PostgreSQL the holder keeps a session-level advisory lock on a dedicated connection for as long as the job
runs. When its process dies the server drops the connection and with it the lock, and another process takes
over within ``retry_seconds``. SQLite is a single-process deployment: the job simply runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

Job = Callable[[], Coroutine[Any, Any, None]]


def lock_key(name: str) -> int:
    """A stable signed 64-bit key per job name (PostgreSQL advisory locks take a bigint)."""
    return int.from_bytes(hashlib.sha256(f"telenet:{name}".encode()).digest()[:8], "big", signed=True)


async def run_exclusive(
    engine: AsyncEngine, name: str, job: Job, *, retry_seconds: float = 2.0, check_seconds: float = 2.0
) -> None:
    """Run ``job`` (a coroutine that loops until cancelled) while holding the job's lock; wait for the lock
    otherwise. Returns only when cancelled."""
    if engine.dialect.name != "postgresql":
        await job()
        return
    key = lock_key(name)
    while True:
        try:
            async with engine.connect() as conn:
                held = bool(await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}))
                await conn.commit()
                if not held:
                    await asyncio.sleep(retry_seconds)
                    continue
                log.info("running %s in this process (advisory lock %d)", name, key)
                task = asyncio.create_task(job(), name=name)
                try:
                    while not task.done():
                        await asyncio.wait({task}, timeout=check_seconds)
                        if not task.done():
                            # The lock lives as long as this connection: if it broke, stop and compete again.
                            await conn.execute(text("SELECT 1"))
                            await conn.commit()
                    task.result()
                finally:
                    if not task.done():
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
                    with contextlib.suppress(Exception):
                        await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                        await conn.commit()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s stopped; competing for it again", name)
            await asyncio.sleep(retry_seconds)
