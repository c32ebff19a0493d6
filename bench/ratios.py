"""The REST rows of issue 13's table, each beside its anchor in the same run, with the ratio.

    .venv/bin/python -m bench.ratios [--seconds 5] [--postgres URL]

- `/healthz` (wrk, 50 connections) and the worklist page (wrk, 20 connections, authenticated and audited)
  against a bare aiohttp JSON handler (wrk, 50 connections), all three served by one process each;
- REST submit (10 clients, each order routed, audited, with events) against a bare SQLAlchemy async +
  aiosqlite loop of small write transactions with ``synchronous=FULL`` (10 concurrent writers).

wrk by its Debian path (``apt-get install wrk``). The DICOM and HL7 rows: ``bench.dicom_ingest`` (Orthanc
beside it) and ``bench.hl7_ingest`` (the hl7apy parse rate beside it).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import PASSWORD, HubProcess, free_port
from tests.factories import order

WRK = "/usr/bin/wrk"
CENTER = "NL-C01-K01-IMG"

_BARE_APP = """
import sys
from aiohttp import web
async def handler(request):
    return web.json_response({"status": "ok", "version": "bare"})
app = web.Application()
app.router.add_get("/healthz", handler)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def wrk(url: str, connections: int, seconds: float, headers: dict[str, str] | None = None) -> dict[str, float]:
    """Requests/s and p99 latency (ms) of ``url`` under wrk (2 threads)."""
    args = [WRK, "-t2", f"-c{connections}", f"-d{int(seconds)}s", "--latency"]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True, timeout=seconds + 60).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return {
        "rate": rate,
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"),
        "errors": float(non2xx.group(1)) if non2xx else 0.0,
    }


def bare_aiohttp(seconds: float) -> dict[str, float]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", _BARE_APP, str(port)])
    try:
        for _ in range(100):
            try:
                subprocess.run(["curl", "-sf", f"http://127.0.0.1:{port}/healthz"], check=True, capture_output=True)
                break
            except subprocess.CalledProcessError:
                time.sleep(0.1)
        return wrk(f"http://127.0.0.1:{port}/healthz", 50, seconds)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def bare_writes(seconds: float, writers: int = 10) -> float:
    """Small write transactions/s: SQLAlchemy async + aiosqlite, WAL, synchronous=FULL, ``writers`` at once."""
    from sqlalchemy import Column, Integer, MetaData, String, Table, event, insert
    from sqlalchemy.ext.asyncio import create_async_engine

    tmp = tempfile.mkdtemp(prefix="telenet-bare-")
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp}/bare.db", connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    meta = MetaData()
    rows = Table("rows", meta, Column("id", Integer, primary_key=True), Column("value", String(40)))
    async with engine.begin() as conn:
        await conn.run_sync(meta.create_all)
    done = 0
    deadline = time.monotonic() + seconds

    async def writer() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            async with engine.begin() as conn:
                await conn.execute(insert(rows).values(value="x" * 40))
            done += 1

    start = time.monotonic()
    await asyncio.gather(*(writer() for _ in range(writers)))
    elapsed = time.monotonic() - start
    await engine.dispose()
    return done / elapsed


async def rest_submits(hub: HubProcess, token: str, seconds: float, clients: int = 10) -> dict[str, float]:
    done = failed = 0
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {token}"}

    async def client(n: int, http: aiohttp.ClientSession) -> None:
        nonlocal done, failed
        i = 0
        while time.monotonic() < deadline:
            i += 1
            body = order(patient_id=f"B{n}-{i}", serial=i)
            async with http.post(f"{hub.url}/api/v1/requests", json=body, headers=headers) as resp:
                await resp.read()
                if resp.status == 201:
                    done += 1
                else:
                    failed += 1

    start = time.monotonic()
    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(client(n, http) for n in range(clients)))
    return {"rate": done / (time.monotonic() - start), "errors": float(failed)}


async def queue_some(hub: HubProcess, doc: str, his: str, count: int) -> None:
    async with aiohttp.ClientSession() as http:
        for i in range(count):
            async with http.post(
                f"{hub.url}/api/v1/requests",
                json=order(patient_id=f"Q{i}", serial=i),
                headers={"Authorization": f"Bearer {doc}"},
            ) as resp:
                view = await resp.json()
            async with http.post(
                f"{hub.url}/api/v1/requests/{view['id']}/data-complete",
                json={"signal": "api"},
                headers={"Authorization": f"Bearer {his}"},
            ) as resp:
                await resp.read()


def row(what: str, value: str, anchor: str, ratio: float, goal: str) -> str:
    return f"| {what} | {value} | {anchor} | {ratio:.3f} | {goal} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--postgres", help="postgresql+asyncpg URL of an EMPTY database to use instead of SQLite")
    args = parser.parse_args()
    if not Path(WRK).exists():
        sys.exit(f"{WRK} is missing: apt-get install wrk")

    bare = bare_aiohttp(args.seconds)
    bare_txn = asyncio.run(bare_writes(args.seconds))

    hub = HubProcess(database_url=args.postgres)
    hub.prepare()
    hub.set_all_passwords()
    hub.start()
    try:
        doc, his, reader = hub.token("township_doc"), hub.token("his_t01"), hub.token("county_reader")
        asyncio.run(queue_some(hub, doc, his, 30))
        health = wrk(f"{hub.url}/healthz", 50, args.seconds)
        worklist = wrk(
            f"{hub.url}/api/v1/centers/{CENTER}/worklist?limit=50",
            20,
            args.seconds,
            {"Authorization": f"Bearer {reader}"},
        )
        submits = asyncio.run(rest_submits(hub, doc, args.seconds))
    finally:
        hub.stop()

    db = "PostgreSQL" if args.postgres else "SQLite (synchronous=FULL)"
    print(f"database: {db}; {args.seconds:g} s per measurement; password {PASSWORD!r}")
    print("| what | telenet | anchor in the same run | ratio | goal |")
    print("|---|---:|---:|---:|---:|")
    print(
        row(
            "REST submit, 10 clients",
            f"{submits['rate']:.0f} req/s ({submits['errors']:.0f} errors)",
            f"SQLAlchemy async + aiosqlite FULL, 10 writers: {bare_txn:.0f} txn/s",
            submits["rate"] / bare_txn,
            "≥ 0.3",
        )
    )
    print(
        row(
            "worklist GET, 20 connections (wrk)",
            f"{worklist['rate']:.0f} req/s, p99 {worklist['p99_ms']:.1f} ms ({worklist['errors']:.0f} non-2xx)",
            f"bare aiohttp {bare['rate']:.0f} req/s",
            worklist["rate"] / bare["rate"],
            "≥ 0.25, p99 ≤ 20 ms",
        )
    )
    print(
        row(
            "`/healthz`, 50 connections (wrk)",
            f"{health['rate']:.0f} req/s, p99 {health['p99_ms']:.1f} ms",
            f"bare aiohttp {bare['rate']:.0f} req/s, p99 {bare['p99_ms']:.1f} ms",
            health["rate"] / bare["rate"],
            "≥ 0.5",
        )
    )


if __name__ == "__main__":
    main()
