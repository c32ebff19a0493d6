"""DICOM studies in the service layer: index, matching, completeness, forwarding. (Issue: DICOM gateway.)"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from telenet.services.hub import Hub
from telenet.store.models import Center, Request


async def on_routed(hub: Hub, session: AsyncSession, request: Request, center: Center) -> None:
    """A request now sits at ``center`` (first route or escalation): forward its study if the center has a
    DICOM node (filled in by the DICOM work)."""
    del hub, session, request, center
