"""A burst of writers waits in the process's write queue, in order, without taking the pool from readers
(``telenet.store.write_gate``); a full queue and a wait past the bound are refused as overload (503).

Found by the province peak benchmark: 1,233 logins at once (each a write) checked out every pooled
connection and polled SQLite's lock in no order; some waited out the busy timeout, the pool ran dry, and
then even reads (token checks, the HL7 facility check) failed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError

from telenet.store.models import AuditEntry, Request
from telenet.store.write_gate import WriteGate, is_lock_timeout
from tests.integration.test_reads_without_lock import ANSWER_WITHIN_S
from tests.integration.test_requests_api import queued_imaging

# The write gate exists on SQLite only (PostgreSQL has no single write lock).
sqlite_only = pytest.mark.parametrize("database", ["sqlite"], indirect=True)

#: More writers than the pool has connections (10 + 30 overflow).
WRITERS = 120


async def _write(hub: Any, n: int, finished: list[int]) -> None:
    async with hub.sessions() as session:
        session.add(
            AuditEntry(
                at=hub.clock.now(), actor="gate-test", action="gate.test", object_type="test", object_id=str(n),
                outcome="ok",
            )
        )  # fmt: skip
        await session.commit()
    finished.append(n)


@sqlite_only
async def test_a_burst_of_writers_waits_in_order_and_readers_keep_the_pool(client: Any, database: Any) -> None:
    hub = client.hub
    view = await queued_imaging(client, patient_id="G1")
    reader = await client.login("county_reader")
    requester = await client.login("township_doc")
    finished: list[int] = []
    async with database.engine.connect() as holder:
        # SQLite's one write lock, held outside the gate (as another process would hold it).
        await holder.execute(update(Request).where(Request.id == view["id"]).values(clinical_question="锁住"))
        writers = []
        for n in range(WRITERS):
            writers.append(asyncio.create_task(_write(hub, n, finished)))
            await asyncio.sleep(0)  # each reaches the queue before the next starts
        await asyncio.sleep(0.2)
        assert hub.write_gate.waiting == WRITERS - 1  # one took a connection and polls SQLite; the rest queue

        async def reads() -> tuple[int, int]:
            worklist = await client.get("/api/v1/centers/NL-C01-K01-IMG/worklist", headers=reader)
            page = await client.get(f"/api/v1/requests/{view['id']}", headers=requester)
            return worklist.status, page.status

        # Without the queue the writers would hold every pooled connection and these would wait for one.
        assert await asyncio.wait_for(reads(), ANSWER_WITHIN_S) == (200, 200)
        assert finished == []
        await holder.rollback()
    await asyncio.wait_for(asyncio.gather(*writers), ANSWER_WITHIN_S)
    assert finished == list(range(WRITERS))  # in arrival order
    assert hub.write_gate.waiting == 0 and hub.write_gate.waited >= WRITERS - 1
    async with hub.reader() as session:
        rows = await session.scalar(select(func.count()).where(AuditEntry.action == "gate.test"))
    assert rows == WRITERS
    metrics = await client.get("/metrics", headers=await client.login("province_admin"))
    text = await metrics.text()
    assert "telenet_write_queue_waited_total" in text and "telenet_write_queue_handover_seconds_total" in text


@sqlite_only
async def test_a_full_queue_and_a_wait_past_the_bound_are_refused_as_overload(client: Any, database: Any) -> None:
    hub = client.hub
    gate = hub.write_gate
    gate.max_waiting, gate.wait_s = 2, 0.5
    finished: list[int] = []
    headers = await client.login("township_doc")
    async with database.engine.connect() as holder:
        await holder.execute(update(Request).values(clinical_question="锁住"))
        first = asyncio.create_task(_write(hub, 0, finished))  # holds the gate, polls SQLite's lock
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(_write(hub, n, finished)) for n in (1, 2)]
        await asyncio.sleep(0.05)
        with pytest.raises(OperationalError) as refused:
            await _write(hub, 3, finished)  # the queue is full: refused at once
        assert is_lock_timeout(refused.value) and "already queued" in str(refused.value)
        results = await asyncio.gather(*queued, return_exceptions=True)  # waited 0.5 s in the queue
        assert all(isinstance(r, OperationalError) and is_lock_timeout(r) for r in results), results
        assert (gate.refused, gate.timed_out) == (1, 2)
        # A REST write that finds the queue full is a 503 with Retry-After, not a 500.
        queued = [asyncio.create_task(_write(hub, n, finished)) for n in (4, 5)]
        await asyncio.sleep(0.05)
        resp = await client.post("/api/v1/auth/logout", headers=headers)
        assert resp.status == 503 and resp.headers["Retry-After"], (resp.status, await resp.text())
        assert (await resp.json())["type"] == "urn:telenet:problem:overloaded"
        await asyncio.gather(*queued, return_exceptions=True)
        await holder.rollback()
    await asyncio.wait_for(first, ANSWER_WITHIN_S)
    assert finished == [0]


async def test_the_gate_hands_over_in_order_and_survives_cancelled_waiters() -> None:
    gate = WriteGate(wait_s=5, max_waiting=10)
    order: list[int] = []
    await gate.acquire()

    async def take(n: int) -> None:
        await gate.acquire()
        order.append(n)
        await asyncio.sleep(0)
        gate.release()

    tasks = [asyncio.create_task(take(n)) for n in range(5)]
    await asyncio.sleep(0)
    tasks[2].cancel()  # a writer that gave up (a client gone) leaves the queue without taking a turn
    await asyncio.sleep(0)
    assert gate.waiting == 4
    gate.release()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert order == [0, 1, 3, 4]
    await gate.acquire()  # free again: taken at once
    gate.release()


async def test_a_waiter_cancelled_in_the_same_turn_as_the_release_is_skipped_and_the_lock_handed_on() -> None:
    """A waiter cancelled (a timeout is a cancellation too) has its turn cancelled at once but leaves the
    queue only when its task runs again. A release in between used to hand the lock to that cancelled turn:
    an InvalidStateError in the releasing commit, and the lock held by nobody and never handed on again (at
    the province peak: a 68 s hold and every writer timing out behind it)."""
    gate = WriteGate(wait_s=5, max_waiting=10)
    await gate.acquire()
    gone = asyncio.create_task(gate.acquire())
    nxt = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    assert gate.waiting == 2
    gone.cancel()
    gate.release()  # no turn of the loop in between: the cancelled waiter is still queued
    await asyncio.wait_for(nxt, 1)
    assert gate.held_by_current_task() is False and gate.waiting == 0
    with pytest.raises(asyncio.CancelledError):
        await gone
    gate.release()  # nxt's hold (this test releases for it)
    await asyncio.wait_for(gate.acquire(), 1)  # free again: taken at once
    gate.release()


async def test_the_gate_measures_its_holds_and_the_hand_over_latency() -> None:
    """How long the lock is held, and how much of that passes between a hand-over and the next writer running
    (the lock held while nobody writes, because the loop runs other tasks first): the province peak's question."""
    gate = WriteGate(wait_s=5, max_waiting=10)
    await gate.acquire()
    await asyncio.sleep(0.05)
    gate.release()
    assert gate.holds == 1 and 0.05 <= gate.held_s < 1 and gate.handover_s == 0

    ran: list[float] = []

    async def next_writer() -> None:
        await gate.acquire()
        ran.append(time.monotonic())
        gate.release()

    await gate.acquire()
    waiter = asyncio.create_task(next_writer())
    await asyncio.sleep(0)
    assert gate.waiting == 1
    gate.release()  # handed over; this task keeps the loop busy before the next writer can run
    _busy(0.05)
    await waiter
    assert gate.holds == 3 and gate.handover_s >= 0.05 and gate.longest_hold_s >= 0.05 and gate.held_s >= 0.1


def _busy(seconds: float) -> None:
    """A slow turn of the event loop (work that does not yield)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
