"""Peer identity bound to the institution: which institution a DICOM or MLLP connection authenticated as
(its TLS client certificate's fingerprint, else its source network), and whether what the peer says about
itself (an HL7 MSH-4 facility, a DICOM calling AE title) belongs to that institution.

The rule, for a claimed institution X (the facility's or the AE title's):
- the connection authenticated as an institution: X must be that institution, else refused;
- it authenticated as none: refused when X registered peers (a certificate or a network), since someone
  else is speaking for X; accepted when X registered none (plain defaults on loopback keep working).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from sqlalchemy import or_, select

from telenet.services.hub import Hub
from telenet.services.registry_snapshot import RegistrySnapshot
from telenet.store.models import Institution, InstitutionAETitle

log = logging.getLogger(__name__)

REFUSALS_METRIC = "telenet_peer_refusals_total"
REFUSALS_HELP = "Connections, associations and messages refused by peer checks (protocol, reason)"


@dataclass(frozen=True)
class PeerIdentity:
    """What the transport knows about the other end: its address and its certificate's SHA-256 (hex)."""

    address: str | None = None
    cert_sha256: str | None = None


@dataclass(frozen=True)
class Registered:
    institution_id: int
    code: str
    cert_sha256: tuple[str, ...]
    networks: tuple[str, ...]

    @property
    def has_peers(self) -> bool:
        return bool(self.cert_sha256 or self.networks)


def _in_networks(address: str | None, networks: tuple[str, ...]) -> bool:
    if not address or not networks:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    for text in networks:
        try:
            if ip in ipaddress.ip_network(text, strict=False):
                return True
        except ValueError:
            continue
    return False


# The registered peers of one registry snapshot, computed once per snapshot (the snapshot itself is immutable).
_of_snapshot: tuple[RegistrySnapshot, list[Registered]] | None = None


def _peers_of(snap: RegistrySnapshot) -> list[Registered]:
    global _of_snapshot
    cached = _of_snapshot
    if cached is not None and cached[0] is snap:
        return cached[1]
    found = [
        Registered(i.id, i.code, tuple(i.peer_cert_sha256 or ()), tuple(i.peer_networks or ()))
        for i in snap.institutions.values()
        if i.peer_cert_sha256 is not None or i.peer_networks is not None
    ]
    _of_snapshot = (snap, found)
    return found


async def _registered(hub: Hub) -> list[Registered]:
    """Institutions with registered peers: from the process's registry snapshot (no read per message or
    association), or from the database where the hub keeps none."""
    if hub.registry is not None:
        return _peers_of(await hub.registry.get())
    async with hub.reader() as session:
        rows = (
            await session.execute(
                select(Institution.id, Institution.code, Institution.peer_cert_sha256, Institution.peer_networks).where(
                    or_(Institution.peer_cert_sha256.is_not(None), Institution.peer_networks.is_not(None))
                )
            )
        ).all()
    return [Registered(r[0], r[1], tuple(r[2] or ()), tuple(r[3] or ())) for r in rows]


async def authenticated_institution(hub: Hub, identity: PeerIdentity) -> Registered | None:
    """The institution a connection authenticated as: by certificate first, else by source network."""
    registered = await _registered(hub)
    if identity.cert_sha256:
        for item in registered:
            if identity.cert_sha256.lower() in item.cert_sha256:
                return item
    for item in registered:
        if _in_networks(identity.address, item.networks):
            return item
    return None


async def _check(hub: Hub, identity: PeerIdentity, claimed_id: int | None, what: str) -> str | None:
    if claimed_id is None:
        return None  # unknown facility or AE: the service refuses it on its own terms
    bound = await authenticated_institution(hub, identity)
    if bound is not None:
        if bound.institution_id != claimed_id:
            return f"{what} belongs to another institution than the connection authenticated as ({bound.code})"
        return None
    claimed = next((r for r in await _registered(hub) if r.institution_id == claimed_id), None)
    if claimed is not None and claimed.has_peers:
        return f"{what} belongs to an institution whose peers are registered; this connection is not one of them"
    return None


async def check_facility(hub: Hub, facility: str, identity: PeerIdentity) -> str | None:
    """None when the connection may speak for HL7 facility ``facility`` (MSH-4), else the reason."""
    if hub.registry is not None:
        claimed = (await hub.registry.get()).facilities.get(facility)
    else:
        async with hub.reader() as session:
            claimed = (
                await session.execute(select(Institution.id).where(Institution.hl7_facility == facility))
            ).scalar_one_or_none()
    reason = await _check(hub, identity, claimed, f"MSH-4 {facility!r}")
    if reason:
        log.warning("hl7: refused %s from %s: %s", facility, identity.address, reason)
    return reason


async def check_ae_title(hub: Hub, ae_title: str, identity: PeerIdentity) -> str | None:
    """None when the connection may use calling AE ``ae_title``, else the reason."""
    if hub.registry is not None:
        claimed = (await hub.registry.get()).ae_titles.get(ae_title)
    else:
        async with hub.reader() as session:
            claimed = (
                await session.execute(
                    select(InstitutionAETitle.institution_id).where(InstitutionAETitle.ae_title == ae_title)
                )
            ).scalar_one_or_none()
    reason = await _check(hub, identity, claimed, f"calling AE {ae_title!r}")
    if reason:
        log.warning("dicom: refused %s from %s: %s", ae_title, identity.address, reason)
    return reason
