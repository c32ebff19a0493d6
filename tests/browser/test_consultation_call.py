"""Two browsers hold a consultation call through the hub alone: two Chromium contexts (fake camera and
microphone) open the session page of one consultation on loopback, the hub relays offer, answer and ICE
candidates, and a data-channel message crosses in each direction."""

from __future__ import annotations

import asyncio
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import missing_peer
from tests.factories import national_id

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    # host candidates as addresses, not mDNS names: two contexts of one browser on one machine
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]
SHOTS = Path(os.environ.get("TELENET_SCREENSHOTS", "/tmp/telenet-screenshots"))


def _browser_or_skip() -> Any:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        async_playwright = None
    if async_playwright is None or not shutil.which(CHROMIUM):
        missing_peer("Playwright for Python and /usr/bin/chromium are needed; TELENET_REQUIRE_PEERS=1 fails here")
    return async_playwright


async def consultation(client: Any) -> int:
    resp = await client.post(
        "/api/v1/requests",
        json={
            "kind": "consultation",
            "priority": "urgent",
            "subspecialty": "cardiology",
            "clinical_question": "反复胸闷一周，请协助诊治",
            "patient": {"id": "RTC-1", "name": "张三", "national_id": national_id(31)},
            "consent": {"given_by": "患者本人", "given_at": datetime(2026, 3, 2, tzinfo=UTC).isoformat()},
        },
        headers=await client.login("township_doc"),
    )
    assert resp.status == 201, await resp.text()
    view: dict[str, Any] = await resp.json()
    assert view["center"]["code"] == "NL-C01-CONS"
    return int(view["id"])


def token_of(headers: dict[str, str]) -> str:
    return headers["Authorization"].removeprefix("Bearer ")


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_two_browsers_call_through_the_hub(client: Any) -> None:
    async_playwright = _browser_or_skip()
    rid = await consultation(client)
    base = str(client.make_url("/consultation/session.html"))
    clinic = token_of(await client.login("township_doc"))
    specialist = token_of(await client.login("city_reader"))
    await asyncio.to_thread(SHOTS.mkdir, parents=True, exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            a = await (await browser.new_context()).new_page()
            b = await (await browser.new_context()).new_page()
            await a.goto(f"{base}#request={rid}&token={clinic}&say=乡镇卫生院：心电图已上传")
            await a.get_by_text("已加入 (joined)").wait_for(timeout=15_000)
            await b.goto(f"{base}#request={rid}&token={specialist}&say=市级专家：收到，开始会诊")
            await b.get_by_text("已加入 (joined)").wait_for(timeout=15_000)
            received_a = a.locator("#received")
            received_b = b.locator("#received")
            await a.get_by_text("市级专家：收到，开始会诊").wait_for(timeout=30_000)
            await b.get_by_text("乡镇卫生院：心电图已上传").wait_for(timeout=30_000)
            assert (await received_a.text_content() or "").startswith("city_reader#")
            assert (await received_b.text_content() or "").startswith("township_doc#")
            assert "周文博" in (await a.locator("#presence").text_content() or ""), "presence shows who joined"
            await a.get_by_text("connected").wait_for(timeout=15_000)
            await a.screenshot(path=str(SHOTS / "consultation-call-clinic.png"))
            await b.screenshot(path=str(SHOTS / "consultation-call-specialist.png"))
        finally:
            await browser.close()
