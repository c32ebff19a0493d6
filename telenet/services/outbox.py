"""The HL7 results outbox: an ORU^R01 per final report and per addendum, written in the report's transaction."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from telenet.services.hub import Hub
from telenet.store.models import Report, Request


async def enqueue_result(hub: Hub, session: AsyncSession, request: Request, report: Report) -> None:
    """Queue the result for the requesting institution's HL7 destination (filled in by the HL7 work)."""
    del hub, session, request, report
