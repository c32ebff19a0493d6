"""Province peak hour: the generated province network (10 cities, 100 counties, 1,000 townships, 10,000
villages) and about 8,000 requests with their HL7, DICOM and WebSocket traffic, against one hub process
(issue 7 target: done in at most 6 minutes, i.e. 10 × real time, with zero loss).

    .venv/bin/python -m bench.province_peak [--rate 22] [--duration 360] [--postgres URL-of-an-empty-database]

The simulator (`telenet simulate`) runs in its own process: township HIS endpoints send ORM^O01 over MLLP and
receive ORU^R01, township modalities query the worklist and send studies + MPPS (ECGs as 12-lead waveforms),
readers follow their worklists over WebSocket and sign, clinics acknowledge critical findings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import PASSWORD, HubProcess, free_port
from telenet.netgen import generate_network


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=22.0, help="orders per second")
    parser.add_argument("--duration", type=float, default=360.0, help="seconds of ordering")
    parser.add_argument("--postgres", help="postgresql+asyncpg URL of an EMPTY database")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--scale", type=int, default=10, help="cities, counties per city, ... (10 = province)")
    parser.add_argument("--processes", type=int, default=1, help="hub processes on the one database (PostgreSQL)")
    args = parser.parse_args()
    if args.processes > 1 and not args.postgres:
        raise SystemExit("several processes need --postgres")
    his_port = free_port()
    doc = generate_network(
        cities=args.scale,
        counties_per_city=args.scale,
        townships_per_county=args.scale,
        villages_per_township=args.scale,
        seed=args.seed,
        hl7_destination=("127.0.0.1", his_port),
    )
    # Every simulated township, modality and reader connects from 127.0.0.1, which the per-address limits
    # (issue 14) would read as one peer flooding the hub: the MLLP limit is raised to what 1,000 townships on
    # their own addresses would be allowed together (16 each; it was 4,000 until 2026-12-03, which refused
    # connections a real province would have); DICOM associations to 1,000, one thread each in the node.
    extra = {
        "TELENET_STUDY_QUIET_SECONDS": "2",
        "TELENET_SWEEP_INTERVAL_SECONDS": "2",
        "TELENET_HL7_MAX_CONNECTIONS_PER_PEER": "16000",
        "TELENET_DICOM_MAX_ASSOCIATIONS_PER_PEER": "1000",
        "TELENET_LOGIN_ATTEMPTS_PER_ADDRESS_MINUTE": "100000",
        "TELENET_HL7_DEAD_LETTERS_PER_PEER_HOUR": "100000",
    }
    hub = HubProcess(database_url=args.postgres, protocols=True, env_extra=extra)
    network = Path(hub.tmp) / "province.json"
    network.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    hub.network = network
    started = time.monotonic()
    hub.prepare()
    users = hub.set_all_passwords()
    accounts = Path(hub.tmp) / "accounts.txt"
    accounts.write_text("".join(f"{u} {PASSWORD}\n" for u in users), encoding="utf-8")
    print(f"network of {len(doc['institutions'])} institutions loaded in {time.monotonic() - started:.0f} s")
    # Further processes share the database, the DICOM storage directory and the secret.
    peers = [
        HubProcess(database_url=args.postgres, protocols=True, env_extra={**extra, "TELENET_VAR_DIR": hub.tmp})
        for _ in range(args.processes - 1)
    ]
    processes = [hub, *peers]
    for process in processes:
        process.start()
    try:
        started = time.monotonic()
        command = [
            sys.executable,
            "-m",
            "telenet.cli",
            "simulate",
            "--hub",
            ",".join(p.url for p in processes),
            "--duration",
            str(args.duration),
            "--rate",
            str(args.rate),
            "--network",
            str(network),
            "--accounts",
            str(accounts),
            "--json",
            "--drain",
            "300",
            "--seed",
            str(args.seed),
        ]
        done = subprocess.run(command, capture_output=True, text=True, env=hub.env, check=False)
        elapsed = time.monotonic() - started
        (Path(hub.tmp) / "simulate.json").write_text(done.stdout, encoding="utf-8")
        (Path(hub.tmp) / "simulate.log").write_text(done.stderr, encoding="utf-8")
        print(f"simulator output in {hub.tmp}/simulate.json and simulate.log; the hub's log in {hub.log}")
    finally:
        for process in processes:
            process.stop()
    lines = done.stdout.strip().splitlines()
    if not lines:
        print(done.stderr[-3000:])
        raise SystemExit(1)
    summary = json.loads(lines[-1])
    acknowledged: dict[str, str] = summary.pop("acknowledged", {})
    in_database = check_orders(hub.env["TELENET_DATABASE_URL"], acknowledged)
    dialect = "postgresql" if args.postgres else "sqlite"
    logins = summary.get("logins", {})
    print(
        f"{dialect}, {args.processes} process(es): {summary['orders']} orders at {args.rate}/s for "
        f"{args.duration:.0f} s; all done in {elapsed - logins.get('seconds', 0):.0f} s from the first order "
        f"({logins.get('seconds', 0):.0f} s of logins before it, {logins.get('failed', 0)} failed; {elapsed:.0f} s "
        f"in all); lost {summary['lost']}; unfinished {summary['unfinished']}; errors {summary['errors']}; "
        f"sent again {summary.get('retried', {})}; turnaround s {summary['turnaround_seconds']}"
    )
    print(json.dumps(summary, ensure_ascii=False, indent=1))
    print(
        f"database, order by order: {len(acknowledged)} acknowledged; finished {in_database['finished']}; "
        f"unfinished {len(in_database['unfinished'])} {in_database['unfinished'][:20]}; "
        f"missing {len(in_database['missing'])} {in_database['missing'][:20]}"
    )
    failed = False
    if in_database["unfinished"] or in_database["missing"]:
        print("FAILED: acknowledged orders are not finished in the database")
        failed = True
    if len(acknowledged) < summary["orders"]:
        # Not lost (the HIS knows it was never acknowledged and would send it again), but not served either.
        print(f"FAILED: {summary['orders'] - len(acknowledged)} of {summary['orders']} orders were never acknowledged")
        failed = True
    if failed:
        raise SystemExit(2)


def check_orders(database_url: str, acknowledged: dict[str, str]) -> dict[str, Any]:
    """Every acknowledged order looked up in the database: final (or cancelled), and for imaging and ECG an
    ORU delivered to the HIS; ``missing`` are accessions the database does not know at all."""
    return asyncio.run(_check_async(database_url, acknowledged))


_CHECK_SQL = (
    "SELECT r.accession_number, r.state, EXISTS (SELECT 1 FROM hl7_outbox o WHERE o.request_id = r.id "
    "AND o.message_kind = 'result' AND o.status = 'delivered') FROM requests r"
)


async def _check_async(database_url: str, acknowledged: dict[str, str]) -> dict[str, Any]:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(database_url)
    async with engine.connect() as conn:
        rows = (await conn.execute(text(_CHECK_SQL))).all()
    await engine.dispose()
    return _judge(rows, acknowledged)


def _judge(rows: Any, acknowledged: dict[str, str]) -> dict[str, Any]:
    found = {str(accession): (state, bool(delivered)) for accession, state, delivered in rows}
    unfinished, missing, finished = [], [], 0
    for accession, kind in sorted(acknowledged.items()):
        if accession not in found:
            missing.append(accession)
            continue
        state, delivered = found[accession]
        done = state == "cancelled" or (state == "final" and (kind == "consultation" or delivered))
        if done:
            finished += 1
        else:
            unfinished.append(f"{accession}:{state}{'' if delivered else ':no-ORU'}")
    return {"finished": finished, "unfinished": unfinished, "missing": missing}


if __name__ == "__main__":
    main()
