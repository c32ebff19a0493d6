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
    hl7_discontinue_claimed: str = dataclasses.field(
        default="return",
        metadata={
            "doc": "What ORC-1 DC does to a request a reader has claimed: return (to the requester, with the"
            " HIS's reason) or refuse (AE; the read finishes)."
        },
    )
    login_attempts_per_account_minute: int = dataclasses.field(
        default=10, metadata={"doc": "Login attempts per account per minute (per process); more get 429 Retry-After."}
    )
    login_attempts_per_address_minute: int = dataclasses.field(
        default=60, metadata={"doc": "Login attempts per client address per minute (per process); more get 429."}
    )
    login_hash_queue_per_core: int = dataclasses.field(
        default=64,
        metadata={
            "doc": "Logins that may wait for a password hash, per core (one hashes per core at a time); more are "
            "refused at once as overload (503, Retry-After) before any hashing."
        },
    )
    login_lockout_failures: int = dataclasses.field(
        default=10, metadata={"doc": "Consecutive failed logins after which an account is locked."}
    )
    login_lockout_minutes: float = dataclasses.field(
        default=30.0,
        metadata={"doc": "How long a lockout lasts (an admin lifts it: POST /api/v1/users/{username}/unlock)."},
    )
    metrics_allowed_networks: str = dataclasses.field(
        default="127.0.0.1/32,::1/128",
        metadata={
            "doc": "Comma-separated networks that may read /metrics without a token; others need an admin "
            "or integration token."
        },
    )

    tls_cert_file: str = dataclasses.field(
        default="", metadata={"doc": "The hub's TLS certificate chain (PEM) for HTTPS, DICOM TLS and MLLP over TLS."}
    )
    tls_key_file: str = dataclasses.field(default="", metadata={"doc": "The private key of tls_cert_file (PEM)."})
    tls_ca_file: str = dataclasses.field(
        default="",
        metadata={
            "doc": "CA bundle (PEM) that signs peer certificates: DICOM and MLLP peers must present one signed by it; "
            "outbound links verify the receiver against it."
        },
    )
    http_tls: bool = dataclasses.field(default=False, metadata={"doc": "Serve HTTPS (aiohttp, tls_cert_file)."})
    dicom_tls: bool = dataclasses.field(
        default=False, metadata={"doc": "DICOM TLS on the node (client certificates from tls_ca_file required)."}
    )
    hl7_tls: bool = dataclasses.field(
        default=False, metadata={"doc": "MLLP over TLS on the HL7 listener (client certificates required)."}
    )
    hl7_send_tls: bool = dataclasses.field(
        default=False, metadata={"doc": "Deliver ORU^R01 results over TLS (the HIS verified against tls_ca_file)."}
    )
    dicom_forward_tls: bool = dataclasses.field(
        default=False, metadata={"doc": "Forward studies to center PACS over DICOM TLS."}
    )
    tls_destinations_file: str = dataclasses.field(
        default="",
        metadata={
            "doc": "TOML file of per-destination TLS for outbound links (center PACS, HIS), one table per "
            '"host:port": tls (false: plain), ca_file, cert_file, key_file, verify, server_name; a destination not '
            "listed follows dicom_forward_tls / hl7_send_tls with the hub's files."
        },
    )
    plain_loopback_only: bool = dataclasses.field(
        default=False,
        metadata={"doc": "Refuse plain (non-TLS) HTTP, DICOM and MLLP connections from anywhere but loopback."},
    )
    trusted_proxies: str = dataclasses.field(
        default="",
        metadata={
            "doc": "Comma-separated networks of reverse proxies whose X-Forwarded-For names the client address; "
            "from anyone else the header is ignored."
        },
    )
    dicomweb_max_instance_bytes: int = dataclasses.field(
        default=1 << 30,
        metadata={"doc": "Largest instance a STOW-RS part may carry (413 beyond it; nothing of the body is stored)."},
    )
    dicomweb_max_request_bytes: int = dataclasses.field(
        default=4 << 30, metadata={"doc": "Largest STOW-RS body (413 beyond it; nothing of it is stored)."}
    )
    console_session_minutes: int = dataclasses.field(
        default=480, metadata={"doc": "Lifetime of a console (browser) session cookie after login."}
    )
    viewer_dir: str = dataclasses.field(
        default="", metadata={"doc": "The OHIF viewer's dist folder (make viewer); default {var_dir}/viewer/dist."}
    )

    dicom_max_associations_per_peer: int = dataclasses.field(
        default=32, metadata={"doc": "Simultaneous DICOM associations from one address; more are rejected."}
    )
    dicom_max_pdu_bytes: int = dataclasses.field(
        default=256 << 10,
        metadata={
            "doc": "Maximum PDU length the DICOM node advertises and accepts (a longer PDU aborts the association); "
            "0: unlimited, else at least 4096. 256 KiB receives large instances faster than unlimited PDUs."
        },
    )
    dicom_max_instance_bytes: int = dataclasses.field(
        default=2 << 30, metadata={"doc": "Largest DICOM instance accepted by C-STORE (0xA700 above it)."}
    )
    hl7_max_connections_per_peer: int = dataclasses.field(
        default=16, metadata={"doc": "Simultaneous MLLP connections from one address; more are closed at once."}
    )
    hl7_dead_letters_per_peer_hour: int = dataclasses.field(
        default=200,
        metadata={"doc": "Dead letters kept per sending address per hour; past it unparseable input is only counted."},
    )
    claim_breach_grace_minutes: float = dataclasses.field(
        default=15,
        metadata={
            "doc": "After a claimed request breaches its SLA (or is claimed already breached), how long its reader "
            "keeps it before the claim is released back to the queue; renewing the lease cannot extend it."
        },
    )
    webrtc_ice_servers: str = dataclasses.field(
        default="",
        metadata={
            "doc": "STUN/TURN servers offered to consultation sessions, comma-separated URLs "
            "(stun:host:port, turn:user:password@host:port); empty: host candidates only (a LAN needs no server)."
        },
    )
    group_commit_wait_ms: float = dataclasses.field(
        default=2.0,
        metadata={
            "doc": "How long a DICOM or HL7 write waits for concurrent writes to share its transaction (group "
            "commit); 0 commits each group as soon as its queued members are done. A lone writer whose "
            "previous group was alone too does not wait."
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
