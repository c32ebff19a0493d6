"""TLS for every listener and outbound link, from the settings: one certificate and key for the hub, one CA
bundle that signs the peers (and the hub's own certificate for peers that verify it). Each outbound
destination (a center's PACS, a HIS) may have its own TLS settings (``tls_destinations_file``): its CA bundle,
the client certificate the hub presents to it, whether to verify it, or plain TCP.

Peers are identified by the SHA-256 fingerprint of the certificate they present (registered per institution,
``peers.cert_sha256`` in the network file); see ``telenet.services.peers``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import ssl
import tomllib
from dataclasses import dataclass, fields
from typing import Any

from telenet.config import Settings
from telenet.domain.errors import Invalid


def _check(settings: Settings) -> None:
    if not settings.tls_cert_file or not settings.tls_key_file:
        raise Invalid("TLS needs tls_cert_file and tls_key_file", code="bad-setting")


def server_context(settings: Settings, *, client_certificates: bool) -> ssl.SSLContext:
    """A listener's context. With ``client_certificates`` and a CA bundle, peers must present a certificate
    signed by it (mutual TLS: DICOM and MLLP); HTTPS clients (browsers) are not asked for one."""
    _check(settings)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    if client_certificates and settings.tls_ca_file:
        context.load_verify_locations(settings.tls_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(settings: Settings) -> ssl.SSLContext:
    """An outbound link's context: verifies the peer against the CA bundle (the system's when none is set)
    and presents the hub's certificate when one is configured."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.tls_ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.tls_cert_file and settings.tls_key_file:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    return context


def fingerprint(ssl_object: Any) -> str | None:
    """SHA-256 (lower-case hex) of the peer certificate of an ``ssl.SSLObject``/``SSLSocket``, if any."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest() if der else None


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class DestinationTLS:
    """One outbound destination's TLS settings; empty file names fall back to the hub's (``tls_*_file``)."""

    tls: bool = True
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    verify: bool = True
    server_name: str = ""


def load_destinations(settings: Settings) -> dict[str, DestinationTLS]:
    """``tls_destinations_file``: a TOML table per destination, keyed ``"host:port"``, of DestinationTLS fields.
    A bad file stops the start (a destination meant to be TLS must never silently go plain)."""
    path = settings.tls_destinations_file
    if not path:
        return {}
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise Invalid(f"tls_destinations_file {path}: {exc}", code="bad-setting") from None
    known = {f.name: f.type for f in fields(DestinationTLS)}
    table: dict[str, DestinationTLS] = {}
    for key, entry in data.items():
        host, _, port = key.rpartition(":")
        if not host or not port.isdigit() or not isinstance(entry, dict):
            raise Invalid(f'tls_destinations_file {path}: {key!r} is not a "host:port" table', code="bad-setting")
        for name, value in entry.items():
            expected = bool if known.get(name) in (bool, "bool") else str
            if name not in known or not isinstance(value, expected):
                raise Invalid(f"tls_destinations_file {path}: [{key!r}] {name} = {value!r}", code="bad-setting")
        table[f"{host.strip('[]').lower()}:{int(port)}"] = DestinationTLS(**entry)
    return table


class OutboundTLS:
    """The TLS context of each outbound destination: its own entry of ``tls_destinations_file`` when it has
    one, else the link's global setting (``default_tls``: the hub's CA bundle and certificate). Contexts are
    built once per destination, and every entry is built at start so a broken file fails then."""

    def __init__(self, settings: Settings, *, default_tls: bool) -> None:
        self.settings = settings
        self.default_tls = default_tls
        self.destinations = load_destinations(settings)
        self._default: ssl.SSLContext | None = client_context(settings) if default_tls else None
        self._contexts: dict[str, ssl.SSLContext | None] = {
            key: self._build(entry) for key, entry in self.destinations.items()
        }

    def _build(self, entry: DestinationTLS) -> ssl.SSLContext | None:
        if not entry.tls:
            return None
        settings = self.settings
        ca_file = entry.ca_file or settings.tls_ca_file
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file or None)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            if not entry.verify:  # for a test peer only: documented as such
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            cert_file, key_file = entry.cert_file or settings.tls_cert_file, entry.key_file or settings.tls_key_file
            if cert_file and key_file:
                context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise Invalid(f"TLS settings of a destination: {exc}", code="bad-setting") from None
        return context

    def for_destination(self, host: str, port: int) -> tuple[ssl.SSLContext | None, str]:
        """The context to connect to ``host:port`` with (None: plain TCP) and the name to verify."""
        key = f"{host.strip('[]').lower()}:{int(port)}"
        if key in self._contexts:
            entry = self.destinations[key]
            return self._contexts[key], entry.server_name or host
        return self._default, host
