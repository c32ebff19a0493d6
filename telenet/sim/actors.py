"""Simulated people: readers who claim from their worklists over the live channel and sign reports (some
critical, some returned, some escalated), and clinics that acknowledge critical findings and resubmit."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import websockets
import websockets.exceptions  # not imported by "import websockets" (17): used before any connect

log = logging.getLogger(__name__)

WORK_EVENTS = {
    "request.queued",
    "request.escalated",
    "request.released",
    "request.lease_expired",
    "request.resubmitted",
}


@dataclass
class Behaviour:
    critical_rate: float = 0.05
    return_rate: float = 0.03
    escalate_rate: float = 0.03
    read_seconds: tuple[float, float] = (0.05, 0.4)


#: Pauses before a request the hub refused for now (503, overload: its Retry-After when it gives one) is tried
#: again, each drawn from half to one and a half times this, as the console and a person clicking again do.
RETRY_AFTER_503 = (1.0, 2.0, 4.0, 8.0, 15.0)
#: The longest pause before a try again, whatever Retry-After asks.
RETRY_AFTER_CAP = 30.0


class Api:
    """REST calls as one user each (tokens cached per account). A 503 is tried again after a pause, up to
    ``len(RETRY_AFTER_503)`` times; ``retried`` counts them by what was refused."""

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        passwords: dict[str, str],
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = base_url
        self.session = session
        self.passwords = passwords
        self.tokens: dict[str, str] = {}
        self.rng = rng or random.Random()
        self.retried: Counter[str] = Counter()

    async def token(self, username: str) -> str:
        if username not in self.tokens:
            body = {"username": username, "password": self.passwords[username]}
            status, answer = await self._send(f"{self.base_url}/api/v1/auth/token", body, {}, "login")
            if status != 200:
                raise RuntimeError(f"login of {username} failed: {status} {answer}")
            self.tokens[username] = answer["token"]
        return self.tokens[username]

    async def post(self, username: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {await self.token(username)}"}
        return await self._send(f"{self.base_url}{path}", body or {}, headers, path.rsplit("/", 1)[-1])

    async def _send(self, url: str, body: dict[str, Any], headers: dict[str, str], what: str) -> tuple[int, Any]:
        for pause in (*RETRY_AFTER_503, None):
            async with self.session.post(url, json=body, headers=headers) as r:
                answer = await r.json(content_type=None)
                if r.status != 503 or pause is None:
                    return r.status, answer
                retry_after = r.headers.get("Retry-After", "")
            self.retried[f"{what} 503"] += 1
            wait = float(retry_after) if retry_after.isdigit() else pause
            await asyncio.sleep(min(wait, RETRY_AFTER_CAP) * self.rng.uniform(0.5, 1.5))
        raise AssertionError("unreachable")

    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://").replace("https://", "wss://") + "/api/v1/ws"


async def follow(
    api: Api, username: str, topics: list[str], on_event: Callable[[dict[str, Any]], None], stop: asyncio.Event
) -> None:
    """Stay subscribed to ``topics`` until ``stop`` (or until cancelled); reconnect with ``since`` so no event is
    missed, and log in again after a pause if the login was refused."""
    last: int | None = None
    while not stop.is_set():
        try:
            auth = {"Authorization": f"Bearer {await api.token(username)}"}
            async with websockets.connect(api.ws_url(), additional_headers=auth, max_queue=None) as ws:
                command: dict[str, Any] = {"action": "subscribe", "topics": topics}
                if last is not None:
                    command["since"] = last
                await ws.send(json.dumps(command))
                async for raw in ws:  # until the hub closes the channel or the run cancels this task
                    message = json.loads(raw)
                    if message.get("type") == "event":
                        last = message["id"]
                        on_event(message)
                    elif message.get("type") == "error":
                        log.warning("%s: %s", username, message)
        except (OSError, RuntimeError, aiohttp.ClientError, websockets.exceptions.WebSocketException) as exc:
            log.warning("live channel of %s dropped (%s); reconnecting", username, exc)
            await asyncio.sleep(0.5 + api.rng.random())


class Reader:
    """One center's reader: claims what arrives on the worklist and reports it."""

    def __init__(
        self,
        api: Api,
        username: str,
        center: str,
        top_tier: bool,
        behaviour: Behaviour,
        rng: random.Random,
        on_error: Callable[[str], None],
    ) -> None:
        self.api = api
        self.username = username
        self.center = center
        self.top_tier = top_tier
        self.behaviour = behaviour
        self.rng = rng
        self.on_error = on_error
        self.desk = asyncio.Semaphore(4)
        self.tasks: set[asyncio.Task[None]] = set()

    def on_event(self, message: dict[str, Any]) -> None:
        data = message.get("data", {})
        if message.get("name") in WORK_EVENTS and data.get("state") == "queued" and data.get("center") == self.center:
            task = asyncio.create_task(self.read(int(data["request_id"]), str(data.get("kind"))))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def read(self, request_id: int, kind: str) -> None:
        async with self.desk:
            status, _ = await self.api.post(self.username, f"/api/v1/requests/{request_id}/claim")
            if status == 409:
                return
            if status != 200:
                self.on_error(f"claim {status}")
                return
            await asyncio.sleep(self.rng.uniform(*self.behaviour.read_seconds))
            roll = self.rng.random()
            base = f"/api/v1/requests/{request_id}"
            if kind != "consultation" and roll < self.behaviour.return_rate:
                status, _ = await self.api.post(
                    self.username, f"{base}/return", {"reason": "bad_image_quality", "note": "模拟：运动伪影"}
                )
                self._check("return", status)
                return
            if not self.top_tier and roll < self.behaviour.return_rate + self.behaviour.escalate_rate:
                status, _ = await self.api.post(self.username, f"{base}/escalate", {"reason": "模拟：疑难病例"})
                if status == 200:
                    return
            critical = self.rng.random() < self.behaviour.critical_rate
            report: dict[str, Any] = {"findings": "模拟阅片所见。", "impression": "模拟诊断意见。", "final": True}
            if critical:
                report.update({"critical": True, "critical_items": ["模拟危急值"]})
            status, _ = await self.api.post(self.username, f"{base}/report", report)
            if status == 403:  # may not sign: give it back for someone who may
                await self.api.post(self.username, f"{base}/release")
            self._check("report", status)

    def _check(self, what: str, status: int) -> None:
        if status != 200:
            self.on_error(f"{what} {status}")


class Clinic:
    """A township clinic: acknowledges critical findings (with read-back) and resubmits returned requests."""

    def __init__(self, api: Api, username: str, on_error: Callable[[str], None]) -> None:
        self.api = api
        self.username = username
        self.on_error = on_error
        self.tasks: set[asyncio.Task[None]] = set()

    def on_event(self, message: dict[str, Any]) -> None:
        data = message.get("data", {})
        if message.get("name") == "critical.raised":
            self._spawn(self.acknowledge(int(data["critical_id"])))
        elif message.get("name") == "request.returned":
            self._spawn(self.resubmit(int(data["request_id"])))

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def acknowledge(self, critical_id: int) -> None:
        status, _ = await self.api.post(
            self.username,
            f"/api/v1/critical/{critical_id}/ack",
            {"read_back_by": "模拟值班护士", "read_back": "模拟危急值"},
        )
        if status not in (200, 409):
            self.on_error(f"ack {status}")

    async def resubmit(self, request_id: int) -> None:
        await asyncio.sleep(0.2)
        status, _ = await self.api.post(self.username, f"/api/v1/requests/{request_id}/resubmit", {"note": "已重拍"})
        if status != 200:
            self.on_error(f"resubmit {status}")
