"""The access log of a real server never contains a credential, even one a client put in the URL."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from telenet.api.access_log import RedactingAccessLogger, redacted_target
from telenet.app import build_app
from telenet.config import Settings
from tests.integration.test_cli import free_port


async def test_a_token_in_the_url_is_not_logged(
    settings: Settings, database: Any, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("telenet.test.access")
    caplog.set_level(logging.INFO, logger="telenet.test.access")
    app = build_app(settings, engine=database.engine, background=False)
    runner = web.AppRunner(app, access_log_class=RedactingAccessLogger, access_log=logger)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    secret = "s3cr3t-t0ken-value"
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            headers = {"Authorization": f"Bearer {secret}", "Referer": f"http://x/?token={secret}"}
            async with http.get(f"/api/v1/ws?token={secret}&topic=a", headers=headers) as resp:
                await resp.read()
            async with http.get(f"/healthz?access_token={secret}") as resp:
                await resp.read()
        lines: list[str] = []
        for _ in range(100):  # the server writes its line after the response went out
            lines = [r.getMessage() for r in caplog.records if r.name == "telenet.test.access"]
            if len(lines) >= 2:
                break
            await asyncio.sleep(0.02)
    finally:
        await runner.cleanup()
    assert len(lines) == 2
    assert all(secret not in line for line in lines), lines
    assert '"GET /api/v1/ws?token=[redacted]&topic=a HTTP/1.1" 401' in lines[0]
    assert '"GET /healthz?access_token=[redacted] HTTP/1.1" 200' in lines[1]


def test_redaction_keeps_other_parameters() -> None:
    assert redacted_target("/api/v1/requests", "state=queued&limit=5") == "/api/v1/requests?state=queued&limit=5"
    assert redacted_target("/x", "Password=a&b=") == "/x?Password=[redacted]&b="
    assert redacted_target("/x", "") == "/x"


def test_serve_uses_the_redacting_logger(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    from telenet import cli

    seen: dict[str, Any] = {}
    monkeypatch.setattr(web, "run_app", lambda app, **kwargs: seen.update(kwargs))
    assert cli._serve(settings) == 0
    assert seen["access_log_class"] is RedactingAccessLogger
