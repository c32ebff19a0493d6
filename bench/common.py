"""Shared pieces of the benchmarks: a hub server in a subprocess on free ports with its own database."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "fixtures" / "network-demo.json"
PASSWORD = "bench-password-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def serve(env: dict[str, str], log: Path, url: str) -> subprocess.Popen[bytes]:
    """Start `telenet serve` with ``env`` (output appended to ``log``) and return once /healthz answers. The hub
    leads a process group of its own (with the HL7 parsing pool's forkserver and workers), which
    :func:`kill_group` ends as a whole."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "telenet.cli", "serve"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                kill_group(proc)
                raise RuntimeError(f"the hub did not start:\n{log.read_text(errors='replace')}") from None
            time.sleep(0.1)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the hub and every process of its group (a SIGKILLed hub leaves its forkserver and pool workers
    behind otherwise, orphaned), then reap the hub."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@dataclass
class HubProcess:
    """``telenet serve`` in a subprocess with a fresh database (SQLite in a temp dir, or a PostgreSQL schema)."""

    database_url: str | None = None
    env_extra: dict[str, str] = field(default_factory=dict)
    network: Path = DEMO
    protocols: bool = False  # run the DICOM node and the HL7 listener too (on free ports)

    def __post_init__(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="telenet-bench-")
        self.port = free_port()
        self.dicom_port = free_port()
        self.hl7_port = free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TELENET_")}
        self.env.update(
            {
                "TELENET_VAR_DIR": self.tmp,
                "TELENET_DATABASE_URL": self.database_url or f"sqlite+aiosqlite:///{self.tmp}/telenet.db",
                "TELENET_HTTP_PORT": str(self.port),
                "TELENET_DICOM_ENABLED": "1" if self.protocols else "0",
                "TELENET_HL7_ENABLED": "1" if self.protocols else "0",
                "TELENET_DICOM_PORT": str(self.dicom_port),
                "TELENET_HL7_PORT": str(self.hl7_port),
                "TELENET_LOG_LEVEL": "WARNING",
                **self.env_extra,
            }
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "telenet.cli", *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout

    def prepare(self) -> None:
        self.cli("db", "upgrade")
        self.cli("network", "load", str(self.network))

    def start(self) -> None:
        self.proc = serve(self.env, self.log, self.url)

    def stop(self) -> None:
        """SIGTERM, and SIGKILL if the hub has not shut down within 30 s (a benchmark's figures are taken
        before this; a slow shutdown must not lose them)."""
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                print(f"telenet serve (pid {self.proc.pid}) did not stop within 30 s of SIGTERM: killed")
            kill_group(self.proc)  # and whatever of its group outlived it

    @property
    def log(self) -> Path:
        return Path(self.tmp) / "serve.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_all_passwords(self) -> list[str]:
        """Every account of the database gets PASSWORD (hashed once, written in one UPDATE); their names."""
        import asyncio

        async def update_all() -> list[str]:
            from sqlalchemy import select, update

            from telenet.services.auth import hash_password
            from telenet.store.db import create_engine
            from telenet.store.models import User

            engine = create_engine(self.env["TELENET_DATABASE_URL"])
            try:
                async with engine.begin() as conn:
                    await conn.execute(update(User).values(password_hash=hash_password(PASSWORD)))
                    return list((await conn.execute(select(User.username))).scalars())
            finally:
                await engine.dispose()

        return asyncio.run(update_all())

    def set_password(self, username: str) -> None:
        user = self.user_row(username)
        args = ["user", "add", username, "--role", user["role"], "--institution", user["institution"]]
        for center in user.get("centers", []):
            args += ["--center", center]
        self.cli(*args, "--password-stdin", stdin=PASSWORD + "\n")

    def user_row(self, username: str) -> dict[str, Any]:
        doc = json.loads(self.network.read_text(encoding="utf-8"))
        row: dict[str, Any] = next(u for u in doc["users"] if u["username"] == username)
        return row

    def token(self, username: str) -> str:
        request = urllib.request.Request(
            f"{self.url}/api/v1/auth/token",
            method="POST",
            data=json.dumps({"username": username, "password": PASSWORD}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            return str(json.load(resp)["token"])
