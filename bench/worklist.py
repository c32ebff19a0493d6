"""Worklist page latency with 1 M historic requests in the database (issue 7 target: p99 ≤ 20 ms).

    .venv/bin/python bench/worklist.py [--requests 1000000] [--calls 2000] [--postgres URL]

Fills a fresh database directly (bulk inserts: 1 M finished requests spread over every center and a few
hundred open ones), starts `telenet serve` in a subprocess, and times GET /api/v1/centers/{code}/worklist
from a client on loopback, one call at a time (latency, not throughput). Each call is authenticated and audited
as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from datetime import UTC, datetime, timedelta

import aiohttp
from sqlalchemy import insert, select, text

from bench.common import HubProcess, percentile
from telenet.store.db import create_engine
from telenet.store.models import Center, Institution, Patient, Request, User

CENTER = "NL-C01-K01-IMG"


async def fill(url: str, total: int, open_items: int) -> None:
    engine = create_engine(url)
    now = datetime.now(UTC)
    rng = random.Random(7)
    async with engine.begin() as conn:
        centers = (await conn.execute(select(Center.id, Center.code))).all()
        townships = (
            await conn.execute(select(Institution.id, Institution.path).where(Institution.tier == "township"))
        ).all()
        requester = (await conn.execute(select(User.id).where(User.username == "township_doc"))).scalar_one()
        patients = []
        for i in range(20_000):
            inst_id, _ = townships[i % len(townships)]
            patients.append(
                {
                    "institution_id": inst_id,
                    "his_id": f"H{i:06d}",
                    "name": f"患者{i}",
                    "sex": "F",
                    "created_at": now,
                    "updated_at": now,
                }
            )
        await conn.execute(insert(Patient), patients)
        patient_ids = (await conn.execute(select(Patient.id))).scalars().all()
    target = next(cid for cid, code in centers if code == CENTER)
    batch: list[dict[str, object]] = []
    written = 0
    while written < total + open_items:
        n = written
        is_open = n >= total
        inst_id, path = townships[n % len(townships)]
        ordered = now - timedelta(minutes=rng.randint(10, 600 * 24 * 60))
        state = "queued" if is_open and n % 3 else ("claimed" if is_open else "final")
        priority = ("stat", "urgent", "routine")[n % 3]
        batch.append(
            {
                "accession_number": f"B{uuid.uuid4().hex[:15]}",
                "kind": "imaging",
                "modality": "DX",
                "body_part": "CHEST",
                "priority": priority,
                "priority_rank": n % 3,
                "clinical_question": "体检",
                "patient_id": patient_ids[n % len(patient_ids)],
                "requesting_institution_id": inst_id,
                "requesting_path": path,
                "requester_id": requester,
                "requester_name": "bench",
                "consent_given_by": "本人",
                "consent_given_at": ordered,
                "state": state,
                "center_id": target if is_open else centers[n % len(centers)][0],
                "ordered_at": ordered,
                "queued_at": ordered + timedelta(minutes=2),
                "due_at": ordered + timedelta(minutes=240),
                "final_at": None if is_open else ordered + timedelta(minutes=90),
                "updated_at": ordered,
                "version": 1,
                "escalations": 0,
            }
        )
        written += 1
        if len(batch) == 20_000:
            async with engine.begin() as conn:
                await conn.execute(insert(Request), batch)
            batch.clear()
    if batch:
        async with engine.begin() as conn:
            await conn.execute(insert(Request), batch)
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(text("ANALYZE"))
        else:
            await conn.execute(text("ANALYZE"))
    await engine.dispose()


async def measure(hub: HubProcess, calls: int) -> list[float]:
    token = hub.token("county_reader")
    headers = {"Authorization": f"Bearer {token}"}
    latencies = []
    async with aiohttp.ClientSession(headers=headers) as session:
        for i in range(calls + 50):
            start = time.perf_counter()
            async with session.get(f"{hub.url}/api/v1/centers/{CENTER}/worklist?limit=50") as resp:
                body = await resp.json()
                assert resp.status == 200 and body["items"], body
            if i >= 50:  # warm-up calls are not counted
                latencies.append((time.perf_counter() - start) * 1000)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--open", type=int, default=300)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--postgres", help="postgresql+asyncpg URL of an EMPTY database to use")
    args = parser.parse_args()
    hub = HubProcess(database_url=args.postgres)
    hub.prepare()
    hub.set_password("county_reader")
    started = time.monotonic()
    asyncio.run(fill(hub.env["TELENET_DATABASE_URL"], args.requests, args.open))
    print(f"filled {args.requests} historic + {args.open} open requests in {time.monotonic() - started:.0f} s")
    hub.start()
    try:
        latencies = asyncio.run(measure(hub, args.calls))
    finally:
        hub.stop()
    dialect = "postgresql" if args.postgres else "sqlite"
    print(
        f"{dialect}: worklist page (50 items) over {len(latencies)} calls: "
        f"p50 {percentile(latencies, 50):.1f} ms, p90 {percentile(latencies, 90):.1f} ms, "
        f"p99 {percentile(latencies, 99):.1f} ms, max {max(latencies):.1f} ms"
    )


if __name__ == "__main__":
    main()
