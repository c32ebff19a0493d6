"""The sweeper: expired claims back to the queue, SLA breaches escalated, unacknowledged critical findings
escalated. Each pass is idempotent, so a pass repeated after a crash does no harm."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from telenet.services.coordination import release_breached_claims
from telenet.services.hub import Hub
from telenet.services.queue import escalate_breaches, expire_leases
from telenet.services.registry_admin import apply_due
from telenet.services.reports import escalate_unacknowledged
from telenet.store.write_gate import log_failure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepResult:
    leases_expired: int
    breaches: int
    criticals_escalated: int
    breached_claims_released: int = 0
    registry_changes_applied: int = 0


async def sweep_once(hub: Hub) -> SweepResult:
    # Registry changes scheduled for now first (routing already uses them; the live rows follow).
    applied = await apply_due(hub)
    # Breached claims first, so a claim cut short by its capped lease is released with its reason.
    released = await release_breached_claims(hub)
    return SweepResult(
        leases_expired=await expire_leases(hub),
        breaches=await escalate_breaches(hub),
        criticals_escalated=await escalate_unacknowledged(hub),
        breached_claims_released=released,
        registry_changes_applied=applied,
    )


async def run_sweeper(hub: Hub, interval: float) -> None:
    """Sweep every ``interval`` seconds until cancelled; a failing pass is logged and retried next time."""
    while True:
        try:
            result = await sweep_once(hub)
            if result.leases_expired or result.breaches or result.criticals_escalated:
                log.info("sweep: %s", result)
        except Exception:
            log_failure(log, "sweep failed")
        await asyncio.sleep(interval)
