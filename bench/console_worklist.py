"""The reader's worklist page in a real browser with 500 open items, while 50 other console sessions follow
the same worklist over the WebSocket (issue 12 targets: interactive within 1 s; a state change shown in an
open page within 1 s).

    .venv/bin/python bench/console_worklist.py [--open 500] [--sessions 50] [--rounds 10]

Fills a fresh database (bench.worklist.fill), starts `telenet serve`, logs 50 console sessions in through the
login form and connects each one's WebSocket with its cookie (the browsers' share of the hub's work), then
drives Debian's chromium: the page load until the worklist is interactive (with its parts: the hub's time to
the first byte, and the parse after the last) and its live channel open, and a claim made over REST by another
reader until the open page shows the new holder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import threading
import time
from typing import Any

import aiohttp

from bench.common import PASSWORD, HubProcess
from bench.worklist import CENTER, fill
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, VIEWPORT


async def console_session(http: aiohttp.ClientSession, url: str, username: str) -> str:
    async with http.get(f"{url}/login") as page:
        prelogin = page.cookies["telenet_prelogin"].value
    async with http.post(
        f"{url}/login",
        data={"csrf_token": prelogin, "username": username, "password": PASSWORD},
        headers={"Cookie": f"telenet_prelogin={prelogin}"},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303, await resp.text()
        return resp.cookies["telenet_session"].value


async def followers(url: str, count: int, ready: threading.Event, stop: threading.Event, seen: list[int]) -> None:
    """``count`` console sessions on the live worklist; ``seen`` counts the events they receive."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        sockets = []
        for i in range(count):
            cookie = await console_session(http, url, "county_reader" if i % 2 else "junior_reader")
            ws = await http.ws_connect(f"{url}/api/v1/ws", headers={"Cookie": f"telenet_session={cookie}"})
            await ws.send_json({"action": "subscribe", "topics": [f"worklist:{CENTER}"]})
            assert (await ws.receive_json())["type"] == "subscribed"
            sockets.append(ws)

        async def drain(ws: Any) -> None:
            async for msg in ws:
                if json.loads(msg.data).get("type") == "event":
                    seen[0] += 1

        tasks = [asyncio.create_task(drain(ws)) for ws in sockets]
        ready.set()
        await asyncio.to_thread(stop.wait)
        for ws in sockets:
            await ws.close()
        await asyncio.gather(*tasks, return_exceptions=True)


def browse(hub: HubProcess, rounds: int) -> dict[str, list[float]]:
    from playwright.sync_api import expect, sync_playwright

    token = hub.token("junior_reader")
    figures: dict[str, list[float]] = {
        "interactive_ms": [],
        "server_ms": [],
        "parse_ms": [],
        "live_ms": [],
        "rows": [],
        "change_ms": [],
    }
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport=VIEWPORT, locale="zh-CN", base_url=hub.url)
        page = context.new_page()
        page.goto("/login")
        page.get_by_label("用户名").fill("county_reader")
        page.get_by_label("密码").fill(PASSWORD)
        page.get_by_role("button", name="登录", exact=True).click()
        page.wait_for_url(lambda u: "/login" not in u)
        for _ in range(rounds):
            start = time.perf_counter()
            page.goto(f"/centers/{CENTER}/worklist")
            timing, server, parse = page.evaluate(
                "() => { const t = performance.getEntriesByType('navigation')[0];"
                " return [t.domInteractive, t.responseStart - t.requestStart, t.domInteractive - t.responseEnd]; }"
            )
            expect(page.locator("#live-status")).to_have_attribute("data-state", "open", timeout=10_000)
            figures["live_ms"].append((time.perf_counter() - start) * 1000)
            figures["interactive_ms"].append(float(timing))
            figures["server_ms"].append(float(server))
            figures["parse_ms"].append(float(parse))
            figures["rows"].append(float(page.locator("table.worklist tbody tr").count()))
        queued = page.locator("table.worklist tbody tr", has_text="待诊断")
        for _ in range(rounds):
            href = queued.first.get_by_role("link").get_attribute("href") or ""
            request_id = int(re.sub(r"\D", "", href))
            row = page.locator(f'tr[data-request="{request_id}"]')
            start = time.perf_counter()
            claim = aiohttp_post(hub.url, f"/api/v1/requests/{request_id}/claim", token)
            assert claim == 200, claim
            expect(row).to_contain_text("junior_reader", timeout=10_000)
            figures["change_ms"].append((time.perf_counter() - start) * 1000)
        browser.close()
    return figures


def aiohttp_post(url: str, path: str, token: str) -> int:
    import urllib.request

    request = urllib.request.Request(f"{url}{path}", method="POST", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return int(resp.status)


async def fresh(url: str) -> None:
    """The open items were ordered in the last hour and are within their SLA (else the sweeper escalates them
    away during the run)."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from telenet.store.db import create_engine
    from telenet.store.models import Request

    engine = create_engine(url)
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(
            update(Request)
            .where(Request.state.in_(("queued", "claimed")))
            .values(
                ordered_at=now - timedelta(minutes=40),
                queued_at=now - timedelta(minutes=38),
                due_at=now + timedelta(hours=4),
            )
        )
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--open", type=int, default=500)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--postgres", help="postgresql+asyncpg URL of an EMPTY database to use")
    args = parser.parse_args()
    # 51 console logins from one address within a minute: above the login limiter's defaults (it has its tests).
    limits = {
        "TELENET_LOGIN_ATTEMPTS_PER_ACCOUNT_MINUTE": "10000",
        "TELENET_LOGIN_ATTEMPTS_PER_ADDRESS_MINUTE": "10000",
    }
    hub = HubProcess(database_url=args.postgres, env_extra=limits)
    hub.prepare()
    hub.set_all_passwords()
    asyncio.run(fill(hub.env["TELENET_DATABASE_URL"], 1000, args.open))
    asyncio.run(fresh(hub.env["TELENET_DATABASE_URL"]))
    hub.start()
    ready, stop, seen = threading.Event(), threading.Event(), [0]
    thread = threading.Thread(target=lambda: asyncio.run(followers(hub.url, args.sessions, ready, stop, seen)))
    thread.start()
    try:
        assert ready.wait(120), "the console sessions did not connect"
        figures = browse(hub, args.rounds)
    finally:
        stop.set()
        thread.join(30)
        hub.stop()
    print(f"{args.sessions} console sessions on the live worklist; {seen[0]} events delivered to them")
    print(f"worklist rows shown: {int(statistics.median(figures['rows']))}")
    for name in ("interactive_ms", "server_ms", "parse_ms", "live_ms", "change_ms"):
        values = sorted(figures[name])
        print(f"{name}: median {statistics.median(values):.0f} ms, max {values[-1]:.0f} ms ({len(values)} samples)")


if __name__ == "__main__":
    main()
