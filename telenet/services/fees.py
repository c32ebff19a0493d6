"""Fees (收费、结算): the append-only ledger written when a report goes final. (Issue: fees, recognition.)"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from telenet.services.hub import Hub
from telenet.store.models import Report, Request


async def record_final(hub: Hub, session: AsyncSession, request: Request, report: Report) -> None:
    """Write the one fee line of a final report in the report's transaction (filled in by the fees work)."""
    del hub, session, request, report
