"""TLS for every listener and outbound link, from the settings: one certificate and key for the hub, one CA
bundle that signs the peers (and the hub's own certificate for peers that verify it).

Peers are identified by the SHA-256 fingerprint of the certificate they present (registered per institution,
``peers.cert_sha256`` in the network file); see ``telenet.services.peers``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import ssl
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
