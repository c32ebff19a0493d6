"""Settings: one frozen dataclass, built once from defaults, an optional TOML file and ``TELENET_*``.

Precedence: environment over TOML over defaults. Nothing here runs at import time; the composition
root (``telenet.cli``) calls :func:`load_settings` once and passes the result down.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints

from telenet.domain.errors import Invalid

ENV_PREFIX = "TELENET_"


@dataclass(frozen=True)
class Settings:
    """Every setting of the hub. Each field's metadata ``doc`` is its documentation (``telenet settings``)."""

    database_url: str = dataclasses.field(
        default="sqlite+aiosqlite:///./var/telenet.db",
        metadata={
            "doc": "SQLAlchemy URL. SQLite (aiosqlite, WAL) by default; "
            "postgresql+asyncpg://user@host/db for PostgreSQL."
        },
    )
    var_dir: str = dataclasses.field(
        default="./var", metadata={"doc": "Directory for the SQLite file, DICOM storage and the secret key."}
    )
    secret_file: str = dataclasses.field(
        default="",
        metadata={
            "doc": "File holding the server secret (HMAC key for national ids); created with mode 0600 "
            "when missing. Empty: <var_dir>/secret.key. TELENET_SECRET overrides the file."
        },
    )
    secret: str = dataclasses.field(
        default="", metadata={"doc": "The server secret itself (prefer secret_file); never commit it."}
    )
    http_host: str = dataclasses.field(default="127.0.0.1", metadata={"doc": "HTTP/WebSocket listen address."})
    http_port: int = dataclasses.field(default=8080, metadata={"doc": "HTTP/WebSocket listen port."})
    dicom_enabled: bool = dataclasses.field(default=True, metadata={"doc": "Run the DICOM node."})
    dicom_host: str = dataclasses.field(default="127.0.0.1", metadata={"doc": "DICOM listen address."})
    dicom_port: int = dataclasses.field(default=11112, metadata={"doc": "DICOM listen port."})
    dicom_ae_title: str = dataclasses.field(default="TELENET", metadata={"doc": "The hub's own AE title."})
    dicom_storage_dir: str = dataclasses.field(
        default="",
        metadata={
            "doc": "Where received DICOM files are kept. Empty: <var_dir>/dicom. Keep TMPDIR on the same filesystem "
            "so that a received file is renamed into place, not copied."
        },
    )
    dicom_max_associations: int = dataclasses.field(
        default=200, metadata={"doc": "Simultaneous DICOM associations the node accepts (pynetdicom's default is 10)."}
    )
    dicom_forward_max_attempts: int = dataclasses.field(
        default=12, metadata={"doc": "Attempts to forward a study to a center PACS before it is dead-lettered."}
    )
    dicom_forward_backoff_seconds: float = dataclasses.field(
        default=5.0, metadata={"doc": "First retry delay of a failed forward; doubled on every further failure."}
    )
    dicom_forward_backoff_max_seconds: float = dataclasses.field(
        default=600.0, metadata={"doc": "Longest delay between two attempts to forward the same study."}
    )
    hl7_enabled: bool = dataclasses.field(
        default=True, metadata={"doc": "Run the HL7 gateway: the MLLP listener and the ORU^R01 result sender."}
    )
    hl7_host: str = dataclasses.field(default="127.0.0.1", metadata={"doc": "HL7 MLLP listen address."})
    hl7_port: int = dataclasses.field(default=2575, metadata={"doc": "HL7 MLLP listen port."})
    hl7_max_message_bytes: int = dataclasses.field(
        default=1 << 20,
        metadata={"doc": "Largest inbound HL7 message; a bigger one is answered AR and its connection closed."},
    )
    hl7_idle_timeout_seconds: float = dataclasses.field(
        default=300.0, metadata={"doc": "An inbound MLLP connection silent this long is closed."}
    )
    hl7_workers: int = dataclasses.field(
        default=0,
        metadata={"doc": "Processes that parse and build HL7 (hl7apy is CPU-bound). 0: one per CPU core."},
    )
    hl7_ack_timeout_seconds: float = dataclasses.field(
        default=30.0, metadata={"doc": "How long the result sender waits to connect to a HIS and for its ACK."}
    )
    hl7_send_max_attempts: int = dataclasses.field(
        default=20,
        metadata={
            "doc": "Attempts to deliver one ORU^R01 (timeouts, connection errors, AE) before it is dead-lettered."
        },
    )
    hl7_send_backoff_seconds: float = dataclasses.field(
        default=2.0, metadata={"doc": "First retry delay of an undelivered ORU^R01; doubled on every further failure."}
    )
    hl7_send_backoff_max_seconds: float = dataclasses.field(
        default=600.0, metadata={"doc": "Longest delay between two attempts to deliver the same ORU^R01."}
    )
    token_ttl_minutes: int = dataclasses.field(
        default=720, metadata={"doc": "Lifetime of a bearer token issued by POST /api/v1/auth/token."}
    )
    critical_ack_minutes: int = dataclasses.field(
        default=15,
        metadata={"doc": "Deadline to acknowledge a critical finding (危急值) before it escalates."},
    )
    study_quiet_seconds: float = dataclasses.field(
        default=60.0,
        metadata={"doc": "A study is complete after this long without a new instance (like Orthanc's StableAge)."},
    )
    lease_minutes_stat: float = dataclasses.field(
        default=15, metadata={"doc": "How long a claim on a STAT request lasts before it returns to the queue."}
    )
    lease_minutes_urgent: float = dataclasses.field(
        default=30, metadata={"doc": "How long a claim on an urgent request lasts (a reader renews by claiming again)."}
    )
    lease_minutes_routine: float = dataclasses.field(
        default=60, metadata={"doc": "How long a claim on a routine request lasts."}
    )
    sweep_interval_seconds: float = dataclasses.field(
        default=5.0,
        metadata={
            "doc": "How often the sweeper looks for expired leases, SLA breaches and unacknowledged critical findings."
        },
    )
    log_level: str = dataclasses.field(default="INFO", metadata={"doc": "Python logging level."})
    group_commit_wait_ms: float = dataclasses.field(
        default=2.0,
        metadata={
            "doc": "How long a DICOM or HL7 write waits for concurrent writes to share its transaction (group "
            "commit); 0 commits each group as soon as its queued members are done."
        },
    )

    @property
    def resolved_dicom_storage_dir(self) -> Path:
        return Path(self.dicom_storage_dir) if self.dicom_storage_dir else Path(self.var_dir) / "dicom"

    @property
    def resolved_secret_file(self) -> Path:
        return Path(self.secret_file) if self.secret_file else Path(self.var_dir) / "secret.key"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _coerce(name: str, raw: Any, typ: Any) -> Any:
    try:
        if typ is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(raw)
        if typ is int:
            if isinstance(raw, bool):
                raise ValueError(raw)
            return int(raw)
        if typ is float:
            return float(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise Invalid(f"setting {name}: {raw!r} is not a valid {typ.__name__}", code="bad-setting") from None


def load_settings(
    config_file: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build the settings from defaults, the TOML file (flat keys, as the fields) and the environment."""
    env = os.environ if environ is None else environ
    hints = get_type_hints(Settings)
    known = {f.name for f in fields(Settings)}
    values: dict[str, Any] = {}
    path = config_file or env.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise Invalid(f"config file {path}: {exc}", code="bad-setting") from None
        section = data.get("telenet", data)
        for key, raw in section.items():
            if key not in known:
                raise Invalid(f"config file {path}: unknown setting {key!r}", code="bad-setting")
            values[key] = _coerce(key, raw, hints[key])
    for name in known:
        env_key = ENV_PREFIX + name.upper()
        if env_key in env:
            values[name] = _coerce(name, env[env_key], hints[name])
    return Settings(**values)


def settings_documentation() -> str:
    """A table of every setting, its environment variable and default (for ``telenet settings``)."""
    lines = []
    for f in fields(Settings):
        lines.append(f"{ENV_PREFIX + f.name.upper():32} default {f.default!r}\n    {f.metadata.get('doc', '')}")
    return "\n".join(lines)
