"""Several hub processes on one PostgreSQL: exclusive claims across processes, and events that cross them."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import aiohttp
import websockets

from tests.conftest import needs_postgres
from tests.factories import order
from tests.scaleout.conftest import Cluster, add_readers

pytestmark = needs_postgres("several hub processes")

CENTER = "NL-C01-K01-IMG"


async def _queue_requests(cluster: Cluster, count: int) -> list[int]:
    node = cluster.nodes[0]
    clinic = {"Authorization": f"Bearer {cluster.token(node, 'township_doc')}"}
    his = {"Authorization": f"Bearer {cluster.token(node, 'his_t01')}"}
    ids = []
    async with aiohttp.ClientSession() as http:
        for i in range(count):
            async with http.post(f"{node.url}/api/v1/requests", json=order(patient_id=f"P{i}"), headers=clinic) as r:
                assert r.status == 201, await r.text()
                rid = (await r.json())["id"]
            async with http.post(f"{node.url}/api/v1/requests/{rid}/data-complete", json={}, headers=his) as r:
                assert r.status == 200, await r.text()
            ids.append(rid)
    return ids


async def test_fifty_readers_on_three_processes_claim_each_request_exactly_once(cluster: Cluster) -> None:
    ids = await _queue_requests(cluster, 30)
    await add_readers(cluster, 50, CENTER)
    tokens = [(cluster.nodes[i % 3], cluster.token(cluster.nodes[i % 3], f"reader{i:02d}")) for i in range(50)]
    wins: dict[int, list[str]] = {}
    rng = random.Random(3)

    async def reader(i: int, http: aiohttp.ClientSession) -> None:
        """Fetch the worklist once, then try its items in random order until one claim is won (or none is left)."""
        node, token = tokens[i]
        headers = {"Authorization": f"Bearer {token}"}
        async with http.get(f"{node.url}/api/v1/centers/{CENTER}/worklist?limit=100", headers=headers) as r:
            candidates = [item["request_id"] for item in (await r.json())["items"]]
        rng.shuffle(candidates)
        for target in candidates:
            async with http.post(f"{node.url}/api/v1/requests/{target}/claim", headers=headers) as r:
                if r.status == 200:
                    wins.setdefault(target, []).append(f"reader{i:02d}")
                    return
                assert r.status == 409, await r.text()

    async with aiohttp.ClientSession() as http:
        await asyncio.gather(*(reader(i, http) for i in range(50)))
    assert sorted(wins) == sorted(ids), "every request was claimed"
    assert all(len(who) == 1 for who in wins.values()), {k: v for k, v in wins.items() if len(v) > 1}


async def _ws(node: Any, token: str) -> Any:
    url = node.url.replace("http://", "ws://") + "/api/v1/ws"
    return await websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"})


async def _collect(ws: Any, count: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while len(events) < count:
        message = json.loads(await asyncio.wait_for(ws.recv(), 15))
        if message["type"] == "event":
            events.append(message)
    return events


async def test_events_cross_processes_and_survive_a_killed_process(cluster: Cluster) -> None:
    a, b, c = cluster.nodes
    reader_a = cluster.token(a, "county_reader")
    ws = await _ws(a, reader_a)
    await ws.send(json.dumps({"action": "subscribe", "topics": [f"worklist:{CENTER}"]}))
    assert json.loads(await ws.recv())["type"] == "subscribed"
    clinic_b = {"Authorization": f"Bearer {cluster.token(b, 'township_doc')}"}
    async with aiohttp.ClientSession() as http:
        created = []
        for i in range(10):
            async with http.post(f"{b.url}/api/v1/requests", json=order(patient_id=f"X{i}"), headers=clinic_b) as r:
                assert r.status == 201
                created.append((await r.json())["id"])
        seen = await _collect(ws, 10)
        assert [e["data"]["request_id"] for e in seen] == created, "in order, without gaps, from process B"
        ids = [e["id"] for e in seen]
        assert ids == sorted(ids)
        last = ids[-1]

        a.kill()  # the client's process dies
        await ws.close()
        for i in range(5):
            async with http.post(f"{b.url}/api/v1/requests", json=order(patient_id=f"Y{i}"), headers=clinic_b) as r:
                assert r.status == 201
                created.append((await r.json())["id"])
    ws = await _ws(c, cluster.token(c, "county_reader"))
    await ws.send(json.dumps({"action": "subscribe", "topics": [f"worklist:{CENTER}"], "since": last}))
    assert json.loads(await ws.recv())["type"] == "subscribed"
    replayed = await _collect(ws, 5)
    assert [e["data"]["request_id"] for e in replayed] == created[10:], "nothing missed across the reconnect"
    await ws.close()
    a.start()
