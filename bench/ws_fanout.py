"""WebSocket fan-out: N subscribed clients, time from a state change to its delivery at every client
(issue 7 target with 5,000 clients: p99 ≤ 250 ms).

    .venv/bin/python bench/ws_fanout.py [--clients 5000] [--changes 20] [--postgres URL]

The hub runs in its own process; the clients (the `websockets` library) share one process here, so the
figure includes the client side's own scheduling of 5,000 sockets on the same 2 cores. Delay is measured from
the event's own timestamp (taken by the hub inside the transaction, same machine clock) to the moment each
client has parsed the message.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from datetime import datetime

import aiohttp
import websockets

from bench.common import HubProcess, percentile
from tests.factories import order

TOPIC = "worklist:NL-C01-K01-IMG"


async def run(hub: HubProcess, clients: int, changes: int) -> tuple[list[float], int]:
    reader_token = hub.token("county_reader")
    clinic_token = hub.token("township_doc")
    url = hub.url.replace("http://", "ws://") + "/api/v1/ws"
    delays: list[float] = []
    received = 0
    done = asyncio.Event()
    expected = clients * changes

    async def client(ready: asyncio.Event, gate: asyncio.Semaphore) -> None:
        nonlocal received
        async with gate:
            ws = await websockets.connect(url, open_timeout=60, max_queue=None)
            await ws.send(json.dumps({"action": "auth", "token": reader_token}))
            assert json.loads(await ws.recv())["type"] == "authenticated"
            await ws.send(json.dumps({"action": "subscribe", "topics": [TOPIC]}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
        ready.set()
        try:
            async for raw in ws:
                message = json.loads(raw)
                if message.get("type") == "event":
                    sent = datetime.fromisoformat(message["at"]).timestamp()
                    delays.append((time.time() - sent) * 1000)
                    received += 1
                    if received == expected:
                        done.set()
        finally:
            await ws.close()

    gate = asyncio.Semaphore(200)
    readies = [asyncio.Event() for _ in range(clients)]
    started = time.monotonic()
    tasks = [asyncio.create_task(client(readies[i], gate)) for i in range(clients)]
    await asyncio.gather(*(r.wait() for r in readies))
    print(f"{clients} clients connected and subscribed in {time.monotonic() - started:.1f} s")
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {clinic_token}"}) as session:
        for i in range(changes):
            async with session.post(f"{hub.url}/api/v1/requests", json=order(patient_id=f"F{i}")) as resp:
                assert resp.status == 201, await resp.text()
            await asyncio.sleep(1.0)
    try:
        await asyncio.wait_for(done.wait(), 60)
    except TimeoutError:
        pass
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return delays, expected


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--postgres")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    hub = HubProcess(database_url=args.postgres)
    hub.prepare()
    for user in ("county_reader", "township_doc"):
        hub.set_password(user)
    hub.start()
    try:
        delays, expected = asyncio.run(run(hub, args.clients, args.changes))
    finally:
        hub.stop()
    print(
        f"{'postgresql' if args.postgres else 'sqlite'}: {args.clients} clients x {args.changes} changes: "
        f"delivered {len(delays)}/{expected}; delay p50 {percentile(delays, 50):.0f} ms, "
        f"p99 {percentile(delays, 99):.0f} ms, max {max(delays):.0f} ms"
    )


if __name__ == "__main__":
    main()
