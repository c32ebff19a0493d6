"""The command line: ``telenet serve | db upgrade | network load | user add | settings``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import secrets
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from telenet.config import Settings, load_settings, settings_documentation
from telenet.domain.errors import TelenetError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="telenet", description="telenet: telemedicine coordination hub")
    parser.add_argument("--config", help="TOML settings file (flat keys, or a [telenet] table)")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("serve", help="run HTTP/WebSocket, DICOM and HL7 listeners and the workers")
    sub.add_parser("settings", help="list every setting with its environment variable and default")

    db = sub.add_parser("db", help="database maintenance").add_subparsers(dest="db_command", required=True)
    up = db.add_parser("upgrade", help="apply the Alembic migrations")
    up.add_argument("revision", nargs="?", default="head")

    net = sub.add_parser("network", help="the registry file").add_subparsers(dest="network_command", required=True)
    load = net.add_parser("load", help="validate and load (upsert) a network file")
    load.add_argument("file")
    load.add_argument(
        "--demo-passwords",
        metavar="FILE",
        help="give every account without a password a random one and append it to FILE (0600)",
    )
    gen = net.add_parser("generate", help="write a synthetic five-tier network file (deterministic per seed)")
    gen.add_argument("--cities", type=int, default=2, metavar="N")
    gen.add_argument("--counties-per-city", type=int, default=2, metavar="N")
    gen.add_argument("--townships-per-county", type=int, default=3, metavar="N")
    gen.add_argument("--villages-per-township", type=int, default=2, metavar="N")
    gen.add_argument("--seed", type=int, default=1, metavar="S")
    gen.add_argument("--prefix", default="GP", help="code prefix of every institution (2-4 letters, default GP)")
    gen.add_argument(
        "--hl7-destination",
        metavar="HOST:PORT",
        help="send ORU^R01 results of every county and township there (default: results are not pushed)",
    )
    gen.add_argument(
        "--hl7-distinct-ports", action="store_true", help="one port each, counting up from the --hl7-destination port"
    )
    gen.add_argument("-o", "--output", required=True, metavar="FILE", help="the file to write ('-' for stdout)")

    sim = sub.add_parser("simulate", help="drive a running hub as a province would (HL7, DICOM, REST, WebSocket)")
    sim.add_argument("--hub", required=True, help="the hub's HTTP URL (several, comma-separated: one per process)")
    sim.add_argument("--duration", type=float, default=60.0, help="seconds of ordering (then a bounded drain)")
    sim.add_argument("--rate", type=float, default=1.0, help="orders per second (Poisson arrivals)")
    sim.add_argument("--mix", default="imaging=0.6,ecg=0.3,consultation=0.1", help="weights per kind")
    sim.add_argument("--network", default="fixtures/network-demo.json", help="the network file the hub runs")
    sim.add_argument(
        "--accounts",
        default="var/demo-accounts.txt",
        help="'username password' lines: the accounts the simulated people use",
    )
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--drain", type=float, default=60.0, help="longest wait for results after the ordering")
    sim.add_argument("--json", action="store_true", help="print the summary as JSON only")

    user = sub.add_parser("user", help="accounts").add_subparsers(dest="user_command", required=True)
    add = user.add_parser("add", help="create or update an account")
    add.add_argument("username")
    add.add_argument("--role", required=True)
    add.add_argument("--institution", required=True)
    add.add_argument("--center", action="append", default=[], help="a center (repeat for more)")
    add.add_argument("--title")
    add.add_argument("--display-name")
    add.add_argument("--practice-since", type=date.fromisoformat, help="YYYY-MM-DD")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except TelenetError as exc:
        print(f"telenet: {exc.message}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # aiosqlite logs every statement with its parameters (patient data) at DEBUG: never, whatever the level.
    logging.getLogger("aiosqlite").setLevel(max(logging.INFO, logging.getLogger().level))
    try:
        if args.command == "serve":
            return _serve(settings)
        if args.command == "settings":
            print(settings_documentation())
            return 0
        if args.command == "db":
            from telenet.store.migrate import upgrade

            Path(settings.var_dir).mkdir(parents=True, exist_ok=True)
            upgrade(settings.database_url, args.revision)
            print(f"database at revision {args.revision}")
            return 0
        if args.command == "network" and args.network_command == "generate":
            return _network_generate(args)
        if args.command == "network":
            return _network_load(settings, args.file, args.demo_passwords)
        if args.command == "simulate":
            return _simulate(args)
        if args.command == "user":
            password = None
            if args.password_stdin:
                password = sys.stdin.readline().rstrip("\r\n")
            return asyncio.run(_user_add(settings, args, password))
    except TelenetError as exc:
        print(f"telenet: {exc.message}", file=sys.stderr)
        if isinstance(exc.details, list):
            for item in exc.details:
                if isinstance(item, dict) and "location" in item:
                    print(f"  {item['location']}: {item['message']}", file=sys.stderr)
                else:
                    print(f"  {item}", file=sys.stderr)
        return 1
    return 2


async def _with_hub(settings: Settings, work: Any) -> Any:
    from telenet.app import make_hub
    from telenet.store.db import create_engine

    engine = create_engine(settings.database_url)
    try:
        return await work(make_hub(settings, engine))
    finally:
        await engine.dispose()


def _network_load(settings: Settings, file: str, demo_passwords: str | None) -> int:
    try:
        doc = json.loads(Path(file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"telenet: cannot read {file}: {exc}", file=sys.stderr)
        return 1
    lines = asyncio.run(_with_hub(settings, lambda hub: _load_and_set_passwords(hub, doc, bool(demo_passwords))))
    if demo_passwords and lines:
        path = Path(demo_passwords)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.writelines(lines)
        print(f"{len(lines)} demo password(s) written to {path}")
    return 0


def _network_generate(args: argparse.Namespace) -> int:
    from telenet.netgen import generate_network

    destination = None
    if args.hl7_destination:
        host, _, port = args.hl7_destination.rpartition(":")
        if not host or not port.isdigit():
            print(f"telenet: --hl7-destination must be HOST:PORT, got {args.hl7_destination!r}", file=sys.stderr)
            return 2
        destination = (host, int(port))
    try:
        doc = generate_network(
            cities=args.cities,
            counties_per_city=args.counties_per_city,
            townships_per_county=args.townships_per_county,
            villages_per_township=args.villages_per_township,
            seed=args.seed,
            prefix=args.prefix,
            hl7_destination=destination,
            hl7_distinct_ports=args.hl7_distinct_ports,
        )
    except ValueError as exc:
        print(f"telenet: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(doc, ensure_ascii=False, indent=1) + "\n"
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    Path(args.output).write_text(text, encoding="utf-8")
    tiers: dict[str, int] = {}
    for inst in doc["institutions"]:
        tiers[inst["tier"]] = tiers.get(inst["tier"], 0) + 1
    summary = ", ".join(f"{n} {tier}" for tier, n in tiers.items())
    print(f"{args.output}: {summary}; {len(doc['centers'])} centers, {len(doc['users'])} accounts")
    return 0


async def _load_and_set_passwords(hub: Any, doc: Any, demo_passwords: bool) -> list[str]:
    """Load the file; with ``demo_passwords``, give each account still without a password a random one."""
    from telenet.services.auth import add_user
    from telenet.services.network import load_network

    report = await load_network(hub, doc)
    for section, counts in report.counts.items():
        print(
            f"{section:14} created {counts['created']:6}  updated {counts['updated']:6}  "
            f"unchanged {counts['unchanged']:6}"
        )
    lines: list[str] = []
    if not demo_passwords:
        return lines
    users = {u["username"]: u for u in doc.get("users", [])}
    for name in report.users_without_password:
        u = users[name]
        password = secrets.token_urlsafe(9)
        await add_user(
            hub,
            username=name,
            role=u["role"],
            institution=u["institution"],
            password=password,
            centers=u.get("centers", []),
        )
        lines.append(f"{name:16} {password:14} {u['role']:12} {u['institution']}\n")
    return lines


async def _user_add(settings: Settings, args: argparse.Namespace, password: str | None) -> int:
    from telenet.services.auth import add_user

    async def work(hub: Any) -> int:
        await add_user(
            hub,
            username=args.username,
            role=args.role,
            institution=args.institution,
            password=password,
            centers=args.center,
            title=args.title,
            practice_since=args.practice_since,
            display_name=args.display_name,
        )
        print(f"user {args.username} saved")
        return 0

    result: int = await _with_hub(settings, work)
    return result


def _serve(settings: Settings) -> int:
    from aiohttp import web

    from telenet.app import build_app, ensure_var_dir

    ensure_var_dir(settings)
    app = build_app(settings)
    # Everything loaded so far lives as long as the process: keep it out of the collector's full passes,
    # which otherwise stall the event loop for ~100 ms (measured with bench/hl7_ingest.py).
    gc.freeze()
    from telenet import tls

    context = tls.server_context(settings, client_certificates=False) if settings.http_tls else None
    scheme = "https" if context else "http"
    print(f"telenet serving HTTP on {scheme}://{settings.http_host}:{settings.http_port}", flush=True)
    from telenet.api.access_log import RedactingAccessLogger

    web.run_app(
        app,
        host=settings.http_host,
        port=settings.http_port,
        print=None,
        access_log_class=RedactingAccessLogger,
        ssl_context=context,
    )
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from telenet.sim.run import SimConfig, parse_mix, simulate

    config = SimConfig(
        hub=args.hub,
        network=Path(args.network),
        accounts=Path(args.accounts),
        duration=args.duration,
        rate=args.rate,
        mix=parse_mix(args.mix),
        seed=args.seed,
        drain=args.drain,
        live=not args.json,
    )
    summary = simulate(config)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        from rich.console import Console
        from rich.pretty import Pretty

        shown = {k: v for k, v in summary.items() if k != "acknowledged"}  # the per-order list is for --json
        Console().print(Pretty(shown))
    return 0 if summary["lost"] == 0 else 3


if __name__ == "__main__":
    raise SystemExit(main())
