"""The character set each peer is registered with (UTF-8, GB18030, GBK): its HIS (by HL7 facility) and its
DICOM nodes (by AE title, else by institution). The gateways turn the names into codecs and
SpecificCharacterSet terms."""

from __future__ import annotations

from sqlalchemy import select

from telenet.services.hub import Hub
from telenet.store.models import Institution, InstitutionAETitle

NAMES = ("UTF-8", "GB18030", "GBK")


async def facility_charset(hub: Hub, facility: str | None) -> str | None:
    """The registered set of the HIS whose MSH-4 is ``facility`` (matched by facility id or code); None when
    unknown or not set."""
    if not facility:
        return None
    if hub.registry is not None:
        # The registry in memory: no database work per message for a facility it knows.
        snapshot = await hub.registry.get()
        candidates = [snapshot.facilities.get(facility), snapshot.institution_ids.get(facility)]
        institutions = [snapshot.institutions[i] for i in candidates if i is not None and i in snapshot.institutions]
        if institutions:
            return next((i.hl7_charset for i in institutions if i.hl7_charset in NAMES), None)
    async with hub.reader() as session:
        rows = (
            await session.execute(
                select(Institution.hl7_charset).where(
                    (Institution.hl7_facility == facility) | (Institution.code == facility)
                )
            )
        ).scalars()
        found = next((c for c in rows if c in NAMES), None)
    return found


async def ae_charset(hub: Hub, ae_title: str | None) -> str | None:
    """The set registered for the AE title itself (network file ``ae_charsets``); None when it has none (its
    institution's ``dicom_charset`` applies). From the registry snapshot: no statement per association."""
    title = (ae_title or "").strip()
    if not title:
        return None
    if hub.registry is not None:
        found = (await hub.registry.get()).ae_charsets.get(title)
        return found if found in NAMES else None
    async with hub.reader() as session:
        found = (
            await session.execute(select(InstitutionAETitle.charset).where(InstitutionAETitle.ae_title == title))
        ).scalar_one_or_none()
    return found if found in NAMES else None
