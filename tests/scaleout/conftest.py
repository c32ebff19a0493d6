"""Several `telenet serve` processes on one PostgreSQL database, started on free ports by the test."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bench.common import kill_group, serve
from tests.conftest import DEMO_NETWORK, POSTGRES_URL, TEST_PASSWORD, needs_postgres, password_hash_for_tests
from tests.integration.test_cli import free_port

pytestmark = needs_postgres("several hub processes")


@dataclass
class HubNode:
    """One hub process."""

    name: str
    env: dict[str, str]
    http_port: int
    dicom_port: int
    hl7_port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        self.proc = serve(self.env, self.log, self.url)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no unlock, connections dropped by the kernel."""
        if self.proc and self.proc.poll() is None:
            kill_group(self.proc)  # the hub and its HL7 pool's processes, as a power cut would

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=20)
        kill_group(self.proc)  # and whatever of its group outlived it


@dataclass
class Cluster:
    database_url: str
    nodes: list[HubNode] = field(default_factory=list)
    his_port: int = 0  # where results for the demo township NL-C01-K01-T01 are sent

    def token(self, node: HubNode, username: str) -> str:
        request = urllib.request.Request(
            f"{node.url}/api/v1/auth/token",
            method="POST",
            data=json.dumps({"username": username, "password": TEST_PASSWORD}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            return str(json.load(resp)["token"])


def _cli(env: dict[str, str], *args: str, stdin: str | None = None) -> None:
    subprocess.run(
        [sys.executable, "-m", "telenet.cli", *args],
        env=env,
        input=stdin,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A fresh PostgreSQL database with the demo network (all passwords TEST_PASSWORD) and three hub processes,
    shared by the tests of a module (a test that kills a process starts it again)."""
    assert POSTGRES_URL
    tmp_path = tmp_path_factory.mktemp("cluster")
    name = "tn_" + uuid.uuid4().hex[:12]
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    database_url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    base = {k: v for k, v in os.environ.items() if not k.startswith("TELENET_")}
    base.update(
        {
            "TELENET_DATABASE_URL": database_url,
            "TELENET_SECRET": "scaleout-test-secret",
            "TELENET_LOG_LEVEL": "INFO",
            "TELENET_SWEEP_INTERVAL_SECONDS": "0.5",
            "TELENET_STUDY_QUIET_SECONDS": "0.5",
            "TELENET_HL7_ACK_TIMEOUT_SECONDS": "3",  # also bounds how long a stopping sender waits
            # The tests log in once per call; the login limiter has its own tests (test_login_security).
            "TELENET_LOGIN_ATTEMPTS_PER_ACCOUNT_MINUTE": "10000",
            "TELENET_LOGIN_ATTEMPTS_PER_ADDRESS_MINUTE": "10000",
            # A module may set its own (e.g. short leases): CLUSTER_ENV = {...}
            **getattr(request.module, "CLUSTER_ENV", {}),
        }
    )
    setup_env = {**base, "TELENET_VAR_DIR": str(tmp_path / "setup")}
    _cli(setup_env, "db", "upgrade")
    his_port = free_port()
    asyncio.run(_load_demo(database_url, his_port))
    cluster = Cluster(database_url, his_port=his_port)
    shared_var = tmp_path / "var"  # one storage path shared by every process, as on one host
    for i in range(getattr(request.module, "CLUSTER_SIZE", 3)):
        http, dicom, hl7 = free_port(), free_port(), free_port()
        env = {
            **base,
            "TELENET_VAR_DIR": str(shared_var),
            "TELENET_HTTP_PORT": str(http),
            "TELENET_DICOM_PORT": str(dicom),
            "TELENET_HL7_PORT": str(hl7),
        }
        cluster.nodes.append(HubNode(f"hub{i}", env, http, dicom, hl7, tmp_path / f"hub{i}.log"))
    try:
        for node in cluster.nodes:
            node.start()
        yield cluster
    finally:
        for node in cluster.nodes:
            node.stop()
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _load_demo(database_url: str, his_port: int) -> None:
    """The demo network with every account's password set to TEST_PASSWORD (the tests' hash, see tests.conftest)."""
    from sqlalchemy import update

    from telenet.app import make_hub
    from telenet.config import Settings
    from telenet.services.network import load_network
    from telenet.store.db import create_engine
    from telenet.store.models import User

    engine = create_engine(database_url)
    try:
        hub = make_hub(Settings(secret="scaleout-test-secret"), engine)
        doc = json.loads(DEMO_NETWORK.read_text(encoding="utf-8"))
        for inst in doc["institutions"]:
            if inst["code"] == "NL-C01-K01-T01":
                inst["hl7_destination"] = {"host": "127.0.0.1", "port": his_port}
        await load_network(hub, doc)
        async with hub.sessions() as session:
            await session.execute(update(User).values(password_hash=password_hash_for_tests()))
            await session.commit()
    finally:
        await engine.dispose()


async def add_readers(cluster: Cluster, count: int, center: str) -> list[str]:
    """Reader accounts of ``center`` with TEST_PASSWORD, added through the service layer."""
    from sqlalchemy import update

    from telenet.app import make_hub
    from telenet.config import Settings
    from telenet.services.auth import add_user
    from telenet.store.db import create_engine
    from telenet.store.models import User

    engine = create_engine(cluster.database_url)
    names = [f"reader{i:02d}" for i in range(count)]
    try:
        hub = make_hub(Settings(secret="scaleout-test-secret"), engine)
        for name in names:
            await add_user(hub, username=name, role="reader", institution="NL-C01-K01", password=None, centers=[center])
        async with hub.sessions() as session:
            await session.execute(
                update(User).where(User.username.in_(names)).values(password_hash=password_hash_for_tests())
            )
            await session.commit()
    finally:
        await engine.dispose()
    return names


async def _admin(statement: str) -> None:
    """CREATE/DROP DATABASE, which cannot run inside a transaction."""
    assert POSTGRES_URL
    engine = create_async_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()
