"""The server side of the console's worklist page with 500 open items, in process (no browser, no other
sessions): the time to render the page, the statements it issues, its weight, and the live-update path (what an
open page fetches when one item changes), beside the REST worklist (its largest page, 200 items); the anchor is
the REST institution list, a path none of this touches.

    .venv/bin/python -m bench.console_render [--open 500] [--renders 30] [--profile] [--statements]

Fills a fresh SQLite database as bench.console_worklist does (1,000 historic requests, ``--open`` open ones
in the reader's center), builds the hub's application without its background workers and serves it on
loopback inside this process; a reader logs in through the form. Each figure is the median (and p90) of
``--renders`` sequential requests, taken interleaved with the anchor so machine load hits both alike; the CPU
time is this process's (server, database thread and the in-process client), which other load on the machine
hardly moves, and the ratio is against the anchor's CPU time. ``--profile`` prints cProfile's top functions
of the page render.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import re
import shutil
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import event

from bench.common import PASSWORD, HubProcess, percentile
from bench.console_worklist import fresh
from bench.worklist import CENTER, fill
from telenet.app import ENGINE, build_app
from telenet.config import Settings


async def console_login(client: TestClient, username: str) -> str:
    page = await client.get("/login")
    prelogin = page.cookies["telenet_prelogin"].value
    resp = await client.post(
        "/login",
        data={"csrf_token": prelogin, "username": username, "password": PASSWORD},
        headers={"Cookie": f"telenet_prelogin={prelogin}"},
        allow_redirects=False,
    )
    assert resp.status == 303, await resp.text()
    return str(resp.cookies["telenet_session"].value)


async def timed(call: Callable[[], Awaitable[bytes]]) -> tuple[float, float, bytes]:
    """Wall time and this process's CPU time (the hub's and its database threads'; less hit by machine load)."""
    start, cpu = time.perf_counter(), time.process_time()
    body = await call()
    return (time.perf_counter() - start) * 1000, (time.process_time() - cpu) * 1000, body


async def run(args: argparse.Namespace, hub: HubProcess) -> None:
    settings = Settings(
        database_url=hub.env["TELENET_DATABASE_URL"],
        var_dir=hub.tmp,
        dicom_enabled=False,
        hl7_enabled=False,
    )
    app = build_app(settings, background=False)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        reader = await console_login(client, "county_reader")
        cookie = {"Cookie": f"telenet_session={reader}"}
        token = (
            await (
                await client.post("/api/v1/auth/token", json={"username": "county_reader", "password": PASSWORD})
            ).json()
        )["token"]
        bearer = {"Authorization": f"Bearer {token}"}
        page_url = f"/centers/{CENTER}/worklist"

        async def get(url: str, headers: dict[str, str]) -> bytes:
            async with client.get(url, headers=headers) as resp:
                body = await resp.read()
                assert resp.status == 200, body[:500]
                return body

        first = (await get(page_url, cookie)).decode()
        ids = [int(m) for m in re.findall(r'data-request="(\d+)"', first)]
        rows_url = f"{page_url}?rows={ids[len(ids) // 2]}"
        paths: dict[str, tuple[str, dict[str, str]]] = {
            "api_institutions (anchor)": ("/api/v1/institutions", bearer),
            "api_worklist_200": (f"/api/v1/centers/{CENTER}/worklist?limit=200", bearer),
            "page_worklist_500": (page_url, cookie),
            "live_rows_1": (rows_url, cookie),
        }
        statements: list[str] = []

        def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            statements.append(statement)

        engine = app[ENGINE]
        for _ in range(3):  # warm-up: caches, templates, the actor
            for url, headers in paths.values():
                await get(url, headers)
        times: dict[str, list[float]] = {name: [] for name in paths}
        cpu: dict[str, list[float]] = {name: [] for name in paths}
        sizes: dict[str, int] = {}
        counts: dict[str, int] = {}
        for i in range(args.renders):
            for name, (url, headers) in paths.items():
                statements.clear()
                event.listen(engine.sync_engine, "before_cursor_execute", count)
                try:
                    ms, cpu_ms, body = await timed(lambda url=url, headers=headers: get(url, headers))  # type: ignore[misc]
                finally:
                    event.remove(engine.sync_engine, "before_cursor_execute", count)
                times[name].append(ms)
                cpu[name].append(cpu_ms)
                sizes[name] = len(body)
                if i == 0:
                    counts[name] = len(statements)
                    if args.statements:
                        print(f"-- {name}:")
                        for s in statements:
                            print("   ", " ".join(s.split())[:160])
        print(f"{args.open} open items in {CENTER}; {args.renders} renders each, interleaved; in process on loopback")
        anchor = statistics.median(cpu["api_institutions (anchor)"])
        for name, values in times.items():
            cpu_median = statistics.median(cpu[name])
            print(
                f"{name:28} wall median {statistics.median(values):6.1f} ms p90 {percentile(values, 90):6.1f} ms · "
                f"CPU median {cpu_median:6.1f} ms (ratio {cpu_median / anchor:4.2f}) · "
                f"statements {counts[name]:2} · bytes {sizes[name]:>7,}"
            )
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(10):
                await get(page_url, cookie)
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
            print(out.getvalue())
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--open", type=int, default=500)
    parser.add_argument("--renders", type=int, default=30)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--statements", action="store_true", help="print the statements of each path")
    args = parser.parse_args()
    hub = HubProcess()
    hub.prepare()
    hub.set_all_passwords()
    try:
        asyncio.run(fill(hub.env["TELENET_DATABASE_URL"], 1000, args.open))
        asyncio.run(fresh(hub.env["TELENET_DATABASE_URL"]))
        asyncio.run(run(args, hub))
    finally:
        shutil.rmtree(hub.tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
