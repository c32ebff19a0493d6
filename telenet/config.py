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
    hl7_enabled: bool = dataclasses.field(default=True, metadata={"doc": "Run the HL7 MLLP listener."})
    hl7_host: str = dataclasses.field(default="127.0.0.1", metadata={"doc": "HL7 MLLP listen address."})
    hl7_port: int = dataclasses.field(default=2575, metadata={"doc": "HL7 MLLP listen port."})
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
    sweep_interval_seconds: float = dataclasses.field(
        default=5.0,
        metadata={
            "doc": "How often the sweeper looks for expired leases, SLA breaches and unacknowledged critical findings."
        },
    )
    log_level: str = dataclasses.field(default="INFO", metadata={"doc": "Python logging level."})

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
