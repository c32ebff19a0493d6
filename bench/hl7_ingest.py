"""HL7 ingest: ORM^O01 orders with their ACK over 1 and over 10 MLLP connections into a whole hub (SQLite or
PostgreSQL, the demo network, the HL7 gateway with its process pool), next to the pure hl7apy parse rate on
this machine and the largest event-loop stall seen during the runs.

    .venv/bin/python -m bench.hl7_ingest [--messages 1000] [--connections 1,10] [--workers 0] [--gc-freeze]
                                         [--postgres URL]

The hub runs in this process (so that a task sleeping 10 ms in a loop on its event loop measures the stalls);
the HIS connections run in a child process so that they do not share that loop. Every message is a new order
(its own MSH-10, accession number and patient), accepted with AA after it is routed and stored.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import HubProcess, free_port, percentile

ROOT = Path(__file__).resolve().parent.parent
ORM = (ROOT / "fixtures" / "hl7" / "orm_o01_new_dx.hl7").read_bytes().decode("utf-8")
CONSENT = "CON|1|IMG^影像检查知情同意^L||||||||W|A||20260302095000\r"
FACILITY = "NL-C01-K01-T01"
TARGET_SHARE = 0.8
STALL_LIMIT_MS = 50.0


def order(control_id: str, accession: str, patient: str) -> bytes:
    text = ORM.replace("GX-TS-0101", FACILITY).replace("ORM20240315000101", control_id)
    text = text.replace("GXTS0101-DX-20240315-0001", accession).replace("|P|2.4|", "|P|2.5|")
    return (text.replace("TS0101-000123", patient) + CONSENT).encode()


# ------------------------------------------------------------------------------------------ the HIS side


async def _his_connection(port: int, messages: list[bytes]) -> dict[str, int]:
    from gateways.hl7.mllp import frame, read_frame

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    codes: dict[str, int] = {}
    try:
        for message in messages:
            writer.write(frame(message))
            await writer.drain()
            ack = await asyncio.wait_for(read_frame(reader), 120)
            assert ack is not None
            code = ack.split(b"\rMSA|", 1)[1][:2].decode()
            codes[code] = codes.get(code, 0) + 1
    finally:
        writer.close()
    return codes


async def _his(port: int, connections: int, count: int, run: str) -> dict[str, Any]:
    per = count // connections
    batches = [
        [order(f"{run}{c:02d}{i:05d}", f"B{run}{c:02d}{i:05d}", f"BP{run}{c:02d}{i % 50:02d}") for i in range(per)]
        for c in range(connections)
    ]
    start = time.perf_counter()
    results = await asyncio.gather(*(_his_connection(port, batch) for batch in batches))
    seconds = time.perf_counter() - start
    codes: dict[str, int] = {}
    for result in results:
        for code, n in result.items():
            codes[code] = codes.get(code, 0) + n
    return {"messages": per * connections, "seconds": seconds, "rate": per * connections / seconds, "acks": codes}


def his_main(port: int, connections: int, count: int, run: str) -> None:
    print(json.dumps(asyncio.run(_his(port, connections, count, run))))


async def _canary() -> None:
    """The control: an idle process doing the stall monitor's 10 ms sleeps, until its stdin closes. What it
    sees is the machine's own scheduling delay, not the hub's."""
    loop = asyncio.get_running_loop()
    late: list[float] = []
    stdin_closed = asyncio.Event()
    loop.add_reader(sys.stdin.fileno(), stdin_closed.set)
    while not stdin_closed.is_set():
        before = loop.time()
        await asyncio.sleep(0.01)
        late.append((loop.time() - before - 0.01) * 1000)
    print(json.dumps([max(late, default=0.0), percentile(late, 99)]))


# ------------------------------------------------------------------------------------------- the hub side


def parse_rate(seconds: float = 3.0) -> tuple[float, float]:
    """Messages/s of hl7apy parsing alone (``parse_inbound``), and of the pool's job (parse + ACK), on one core."""
    from gateways.hl7.codec import parse_inbound
    from gateways.hl7.work import parse_with_ack

    sample = order("P0000000001", "PARSE0001", "PP1")
    now = datetime.now(UTC)
    rates = []
    for fn in (lambda: parse_inbound(sample), lambda: parse_with_ack(sample, "TNA1", now)):
        fn()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            fn()
            n += 1
        rates.append(n / (time.perf_counter() - start))
    return rates[0], rates[1]


class StallMonitor:
    """Sleeps 10 ms in a loop on the hub's event loop and records how late it wakes up; also records the
    longest garbage-collector pause meanwhile (one cause of stalls that is not the code's own)."""

    def __init__(self) -> None:
        self.late_ms: list[float] = []
        self.gc_ms = 0.0
        self._gc_started = 0.0
        self._task: asyncio.Task[None] | None = None
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._task is not None:
            self.gc_ms = max(self.gc_ms, (time.perf_counter() - self._gc_started) * 1000)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            self.late_ms.append((loop.time() - before - 0.01) * 1000)

    def start(self) -> None:
        self.late_ms, self.gc_ms = [], 0.0
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> tuple[float, float]:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        return max(self.late_ms, default=0.0), percentile(self.late_ms, 99)


async def run_hub(hub_env: HubProcess, args: argparse.Namespace) -> list[dict[str, Any]]:
    from aiohttp import web

    from telenet.api.context import HUB
    from telenet.app import HL7_GATEWAY, build_app
    from telenet.config import Settings

    settings = Settings(
        database_url=hub_env.env["TELENET_DATABASE_URL"],
        var_dir=hub_env.tmp,
        dicom_enabled=False,
        hl7_enabled=True,
        hl7_port=free_port(),
        hl7_workers=args.workers,
        http_port=free_port(),
        log_level="WARNING",
    )
    app = build_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.http_port).start()
    port = app[HL7_GATEWAY].port
    if args.gc_freeze:
        gc.freeze()  # what `telenet serve` could do once started: imports and registry out of the collector's way
    monitor = StallMonitor()
    results = []
    try:
        await _client(port, 1, 20, "W")  # warm-up: pool workers, caches, SQLite pages
        for i, connections in enumerate(args.connections):
            canary = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.hl7_ingest", "--canary", stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
            monitor.start()
            result = await _client(port, connections, args.messages, "ABCDEFGH"[i])
            result["max_stall_ms"], result["p99_stall_ms"] = await monitor.stop()
            result["max_gc_ms"] = monitor.gc_ms
            out, _ = await canary.communicate(b"")
            result["canary_max_ms"], result["canary_p99_ms"] = json.loads(out)
            result["connections"] = connections
            results.append(result)
        results.append(await service_rate(app[HUB], min(args.messages, 300)))
    finally:
        await runner.cleanup()
    return results


async def service_rate(hub: Any, count: int) -> dict[str, Any]:
    """The same orders through ``hl7_inbound.process`` alone (parsed beforehand, no MLLP, no ACK building):
    what the service layer and the database allow, one order at a time."""
    from gateways.hl7 import mapping
    from gateways.hl7.codec import parse_inbound
    from telenet.services import hl7_inbound

    commands = [
        mapping.command_for(parse_inbound(order(f"S{i:09d}", f"BS{i:06d}", f"SP{i % 50}"))) for i in range(count)
    ]

    async def ack(error: Any, note: Any, mode: str = "ack") -> tuple[str, bytes]:
        return ("AA" if error is None else "AE"), b""

    start = time.perf_counter()
    codes: dict[str, int] = {}
    for command in commands:
        result = await hl7_inbound.process(hub, command, peer="bench", ack=ack)
        codes[result.ack_code] = codes.get(result.ack_code, 0) + 1
    seconds = time.perf_counter() - start
    return {"connections": 0, "messages": count, "seconds": seconds, "rate": count / seconds, "acks": codes}


async def _client(port: int, connections: int, count: int, run: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.hl7_ingest",
        "--his",
        str(port),
        str(connections),
        str(count),
        run,
        stdout=subprocess.PIPE,
        cwd=str(ROOT),
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"HIS client failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(out)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000, help="orders per run")
    parser.add_argument("--connections", default="1,10", help="comma-separated connection counts, one run each")
    parser.add_argument("--workers", type=int, default=0, help="HL7 worker processes (0: one per core)")
    parser.add_argument("--gc-freeze", action="store_true", help="gc.freeze() the hub once it has started")
    parser.add_argument("--postgres", help="postgresql+asyncpg URL of an EMPTY database to use instead of SQLite")
    parser.add_argument("--his", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--parse-rate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--canary", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.his:
        port, connections, count, run = args.his
        his_main(int(port), int(connections), int(count), run)
        return
    if args.parse_rate:
        print(json.dumps(parse_rate()))
        return
    if args.canary:
        asyncio.run(_canary())
        return
    args.connections = [int(c) for c in args.connections.split(",")]
    cores = os.cpu_count() or 1
    # In a child process: hl7apy's tables would otherwise sit in the hub's heap and lengthen its GC pauses.
    measured = subprocess.run(
        [sys.executable, "-m", "bench.hl7_ingest", "--parse-rate"], capture_output=True, check=True, cwd=ROOT
    )
    parse, parse_ack = json.loads(measured.stdout)
    hub_env = HubProcess(database_url=args.postgres)
    hub_env.prepare()
    results = asyncio.run(run_hub(hub_env, args))
    target = TARGET_SHARE * parse * cores
    print(f"database {'PostgreSQL' if args.postgres else 'SQLite'}; ", end="")
    print(f"cores {cores}; hl7apy parse {parse:.0f} msg/s per core (parse + ACK: {parse_ack:.0f}); ", end="")
    print(f"target {TARGET_SHARE} x {parse:.0f} x {cores} = {target:.0f} msg/s, stalls under {STALL_LIMIT_MS:.0f} ms")
    columns = ["connections", "messages", "seconds", "messages/s", "ACKs", "max stall (ms)", "p99 stall (ms)"]
    columns += ["max GC pause (ms)", "idle process: max / p99 stall (ms)", "vs target"]
    print("| " + " | ".join(columns) + " |")
    print("|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in results[:-1]:
        acks = ", ".join(f"{code} {n}" for code, n in sorted(r["acks"].items()))
        print(
            f"| {r['connections']} | {r['messages']} | {r['seconds']:.1f} | {r['rate']:.0f} | {acks} | "
            f"{r['max_stall_ms']:.0f} | {r['p99_stall_ms']:.1f} | {r['max_gc_ms']:.0f} | "
            f"{r['canary_max_ms']:.0f} / {r['canary_p99_ms']:.1f} | {r['rate'] / target:.2f} |"
        )
    service = results[-1]
    print(f"service layer alone (hl7_inbound.process, one at a time): {service['rate']:.0f} orders/s {service['acks']}")


if __name__ == "__main__":
    main()
