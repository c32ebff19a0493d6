"""The deployment files: docker-compose.yml validates with docker-compose itself and wires hub, PostgreSQL and
Orthanc as documented; no secret value is in the repository; the Dockerfile, its entry point, the Orthanc
configuration and the demo PACS overlay agree with each other and with the demo network."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from telenet.domain.registry import check_network
from telenet.schemas import schema_errors
from tests.conftest import DEMO_NETWORK, ROOT, require_tool

COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|PASSPHRASE|_KEY$", re.IGNORECASE)
# NAME_PASSWORD: value / NAME_SECRET=value where the value is not a path or a variable.
LITERAL = re.compile(r"\w*(PASSWORD|SECRET)\w*\s*[:=]\s*['\"]?(?![/$])[A-Za-z0-9+_-]{8,}")


def _compose(*args: str) -> subprocess.CompletedProcess[str]:
    tool = require_tool("docker-compose")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELENET_", "COMPOSE_", "DOCKER_"))}
    return subprocess.run(
        [tool, "-f", str(COMPOSE), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The configuration as docker-compose resolves it, turned into JSON by the interpreter docker-compose runs on
    (it brings PyYAML; the project does not depend on it)."""
    checked = _compose("config", "-q")
    assert checked.returncode == 0, checked.stderr
    resolved = _compose("config")
    assert resolved.returncode == 0, resolved.stderr
    interpreter = Path(require_tool("docker-compose")).read_text(encoding="utf-8").splitlines()[0].removeprefix("#!")
    converted = subprocess.run(
        [*interpreter.split(), "-c", "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
        input=resolved.stdout,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert converted.returncode == 0, converted.stderr
    config: dict[str, Any] = json.loads(converted.stdout)
    return config


def _published(service: dict[str, Any]) -> set[int]:
    ports = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.add(int(port["published"]))
        else:
            ports.add(int(str(port).split(":")[0]))
    return ports


def test_services_ports_and_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"hub", "hub2", "postgres", "orthanc"}
    hub, postgres, orthanc = services["hub"], services["postgres"], services["orthanc"]
    assert _published(hub) == {8080, 11112, 2575}
    # The second hub process: same database, storage and secrets, its own host ports.
    hub2 = services["hub2"]
    assert _published(hub2) == {8081, 11113, 2576}
    assert hub2["environment"]["TELENET_DATABASE_URL"] == hub["environment"]["TELENET_DATABASE_URL"]
    assert "telenet-var:/var/lib/telenet" in _volumes(hub2)
    assert hub2["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert not _published(postgres), "the database is reachable only on the compose network"
    assert postgres["image"] == "postgres:15"
    assert "pgdata:/var/lib/postgresql/data" in _volumes(postgres)
    assert "telenet-var:/var/lib/telenet" in _volumes(hub)
    assert {"telenet-var", "pgdata", "orthanc-db"} <= set(compose["volumes"])
    assert orthanc["image"].startswith(("jodogne/orthanc", "orthancteam/orthanc"))
    mounts = _volumes(orthanc)
    assert any(m.endswith("deploy/orthanc.json:/etc/orthanc/orthanc.json:ro") for m in mounts), mounts


def _volumes(service: dict[str, Any]) -> list[str]:
    out = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            suffix = ":ro" if volume.get("read_only") else ""
            out.append(f"{volume['source']}:{volume['target']}{suffix}")
        else:
            out.append(str(volume).removesuffix(":rw"))
    return out


def test_hub_waits_for_a_healthy_postgres_and_is_wired_by_environment(compose: dict[str, Any]) -> None:
    hub = compose["services"]["hub"]
    assert hub["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "orthanc" in hub["depends_on"]
    assert compose["services"]["postgres"]["healthcheck"]["test"]
    assert "/healthz" in " ".join(hub["healthcheck"]["test"])
    env = hub["environment"]
    url = make_url(env["TELENET_DATABASE_URL"])
    assert url.drivername == "postgresql+asyncpg" and url.host == "postgres" and url.password is None
    assert env["TELENET_SECRET_FILE"] == "/run/secrets/telenet_secret"
    assert env["PGPASSWORD_FILE"] == "/run/secrets/postgres_password"
    secrets = {s if isinstance(s, str) else s["source"] for s in hub["secrets"]}
    assert secrets == {"telenet_secret", "postgres_password"}


def test_no_secret_value_in_the_repository(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRETISH.search(key):
                assert key.endswith("_FILE") and str(value).startswith("/run/secrets/"), f"{name}: {key}"
        assert "TELENET_SECRET" not in (service.get("environment") or {})
    for secret in compose["secrets"].values():
        path = Path(secret["file"])
        assert path.parent == DEPLOY / "secrets", secret
    ignored = (DEPLOY / "secrets" / ".gitignore").read_text(encoding="utf-8").split()
    assert "*" in ignored and "!.gitignore" in ignored
    tracked = subprocess.run(
        ["git", "ls-files", "deploy/secrets"], cwd=ROOT, capture_output=True, text=True, timeout=30
    ).stdout.split()
    assert tracked in ([], ["deploy/secrets/.gitignore"])
    for path in (COMPOSE, ROOT / "Dockerfile", *DEPLOY.glob("*.*")):
        text = path.read_text(encoding="utf-8")
        assert not LITERAL.search(text), path


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert lines[0] == "FROM python:3.11-slim"
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert "pip install -e '.[postgres]'" in text
    expose = next(line for line in lines if line.startswith("EXPOSE "))
    assert set(expose.split()[1:]) == {"8080", "11112", "2575"}
    assert any(line.startswith("VOLUME ") and "/var/lib/telenet" in line for line in lines)
    assert "HEALTHCHECK" in text and "/healthz" in text
    for key in ("TELENET_HTTP_HOST=0.0.0.0", "TELENET_DICOM_HOST=0.0.0.0", "TELENET_HL7_HOST=0.0.0.0"):
        assert key in text
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {"tests", ".venv", "var", "deploy/secrets", ".git"} <= set(ignored)


def test_entrypoint_migrates_then_runs_with_the_password_from_its_file(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    fake = bin_dir / "telenet"
    fake.write_text(f'#!/bin/sh\necho "$* PGPASSWORD=$PGPASSWORD" >> {log}\n', encoding="utf-8")
    fake.chmod(0o755)
    password = tmp_path / "postgres_password"
    password.write_text("not-a-real-password\n", encoding="utf-8")
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "PGPASSWORD_FILE": str(password),
        "TMPDIR": str(tmp_path / "tmp"),
    }
    result = subprocess.run(
        ["sh", str(DEPLOY / "entrypoint.sh"), "serve"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert log.read_text(encoding="utf-8").splitlines() == [
        "db upgrade PGPASSWORD=not-a-real-password",
        "serve PGPASSWORD=not-a-real-password",
    ]
    assert (tmp_path / "tmp").is_dir()


def test_orthanc_is_the_county_pacs_of_the_demo_and_knows_the_hub(compose: dict[str, Any]) -> None:
    config = json.loads((DEPLOY / "orthanc.json").read_text(encoding="utf-8"))
    assert config["DicomAet"] == "K01PACS" and config["DicomPort"] == 4242
    assert config["DicomAlwaysAllowStore"] is False, "only registered modalities (the hub) may store"
    hub_ae = compose["services"]["hub"]["environment"]["TELENET_DICOM_AE_TITLE"]
    (modality,) = config["DicomModalities"].values()
    assert modality["AET"] == hub_ae and modality["Host"] == "hub" and modality["Port"] == 11112
    assert modality["AllowStore"] is True

    overlay = json.loads((DEPLOY / "demo-pacs.json").read_text(encoding="utf-8"))
    demo = json.loads(DEMO_NETWORK.read_text(encoding="utf-8"))
    assert schema_errors("network", overlay) == []
    assert check_network(overlay, {i["code"]: i["tier"] for i in demo["institutions"]}) == []
    demo_institutions = {i["code"]: i for i in demo["institutions"]}
    assert all(i == demo_institutions[i["code"]] for i in overlay["institutions"]), "the overlay changes no institution"
    (center,) = overlay["centers"]
    demo_center = next(c for c in demo["centers"] if c["code"] == center["code"])
    assert {k: v for k, v in center.items() if k != "dicom_node"} == {
        k: v for k, v in demo_center.items() if k != "dicom_node"
    }
    assert center["dicom_node"] == {"ae_title": config["DicomAet"], "host": "orthanc", "port": config["DicomPort"]}
    assert demo_center["dicom_node"]["ae_title"] == config["DicomAet"]
