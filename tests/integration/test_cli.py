"""The command line as an operator uses it: migrate, load (twice), add a user, serve and answer /healthz."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import DEMO_NETWORK

TELENET = [sys.executable, "-m", "telenet.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(args: list[str], env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(TELENET + args, env=env, input=stdin, capture_output=True, text=True, timeout=120)


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELENET_")}
    env.update(
        {
            "TELENET_VAR_DIR": str(tmp_path / "var"),
            "TELENET_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/var/telenet.db",
        }
    )
    return env


def test_upgrade_load_user_and_serve(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    assert run(["db", "upgrade"], env).returncode == 0
    passwords = tmp_path / "var" / "demo-accounts.txt"
    first = run(["network", "load", str(DEMO_NETWORK), "--demo-passwords", str(passwords)], env)
    assert first.returncode == 0, first.stderr
    assert "institutions   created     43" in first.stdout
    accounts = passwords.read_text(encoding="utf-8").splitlines()
    assert len(accounts) == 14 and oct(passwords.stat().st_mode & 0o777) == "0o600"
    second = run(["network", "load", str(DEMO_NETWORK), "--demo-passwords", str(passwords)], env)
    assert second.returncode == 0 and "created      0  updated      0" in second.stdout
    assert len(passwords.read_text(encoding="utf-8").splitlines()) == 14, "no new passwords on a second load"

    added = run(
        [
            "user",
            "add",
            "ops_reader",
            "--role",
            "reader",
            "--institution",
            "NL-C01-K01",
            "--center",
            "NL-C01-K01-IMG",
            "--center",
            "NL-C01-K01-ECG",
            "--title",
            "主治医师",
            "--practice-since",
            "2015-07-01",
            "--password-stdin",
        ],
        env,
        stdin="s3cret-pass\n",
    )
    assert added.returncode == 0, added.stderr
    bad = run(["user", "add", "x_user", "--role", "pilot", "--institution", "NL-C01-K01"], env)
    assert bad.returncode == 1 and "unknown role" in bad.stderr

    port = free_port()
    env.update(
        {"TELENET_HTTP_PORT": str(port), "TELENET_DICOM_PORT": str(free_port()), "TELENET_HL7_PORT": str(free_port())}
    )
    server = subprocess.Popen([*TELENET, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        health = _wait_json(f"http://127.0.0.1:{port}/healthz")
        assert health["database"] == "ok"
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/auth/token",
            method="POST",
            data=json.dumps({"username": "ops_reader", "password": "s3cret-pass"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert json.load(resp)["token"]
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_json(url: str) -> Any:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return json.load(resp)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_broken_file_lists_every_error_and_exits_non_zero(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    assert run(["db", "upgrade"], env).returncode == 0
    doc = json.loads(DEMO_NETWORK.read_text(encoding="utf-8"))
    doc["institutions"][2]["tier"] = "galaxy"
    doc["centers"][0]["capacity"] = -1
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    result = run(["network", "load", str(broken)], env)
    assert result.returncode == 1
    assert "/institutions/2/tier" in result.stderr and "/centers/0/capacity" in result.stderr
    unreadable = run(["network", "load", str(tmp_path / "missing.json")], env)
    assert unreadable.returncode == 1 and "cannot read" in unreadable.stderr
