"""What the simulator saw: every order followed from HL7 ACK to ORU, and the summary it prints."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from telenet.domain.stats import percentile

RETURNED = "returned to the requester"
STILL_WORKING = "still being worked on when the run ended"


@dataclass
class Tracked:
    accession: str
    kind: str
    priority: str
    township: str
    request_id: int | None = None
    ack: str | None = None
    data_sent: bool = False
    state: str = "sent"
    queued_at: datetime | None = None
    final_at: datetime | None = None
    due_at: datetime | None = None
    results: list[str] = field(default_factory=list)
    critical: bool = False
    returned: int = 0
    escalated: int = 0
    center: str | None = None


@dataclass
class Tally:
    orders: dict[str, Tracked] = field(default_factory=dict)
    by_id: dict[int, Tracked] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)
    events: int = 0
    results_unmatched: int = 0

    def add(self, tracked: Tracked) -> None:
        self.orders[tracked.accession] = tracked

    def error(self, what: str) -> None:
        self.errors[what] += 1

    def on_event(self, message: dict[str, Any]) -> None:
        """Follow a request through the events of its institution's channel."""
        self.events += 1
        data = message.get("data", {})
        tracked = self.orders.get(str(data.get("accession_number")))
        if tracked is None:
            return
        if data.get("request_id"):
            tracked.request_id = int(data["request_id"])
            self.by_id[tracked.request_id] = tracked
        tracked.state = str(data.get("state") or tracked.state)
        tracked.center = data.get("center") or tracked.center
        at = datetime.fromisoformat(message["at"])
        name = message["name"]
        if name == "request.queued" and tracked.queued_at is None:
            tracked.queued_at = at
        if data.get("due_at"):
            tracked.due_at = datetime.fromisoformat(data["due_at"])
        if name == "request.final":
            tracked.final_at = at
        elif name == "request.returned":
            tracked.returned += 1
        elif name == "request.escalated":
            tracked.escalated += 1
        elif name == "critical.raised":
            tracked.critical = True

    def on_result(self, accession: str, status: str) -> None:
        tracked = self.orders.get(accession)
        if tracked is None:
            self.results_unmatched += 1
            return
        tracked.results.append(status)

    def outstanding(self) -> list[Tracked]:
        """Acknowledged orders whose story is not finished: no final yet, or a final whose ORU has not arrived.
        (An order the hub never acknowledged was not accepted, so it cannot be lost: it is counted apart.)"""
        return [t for t in self.orders.values() if t.ack == "AA" and not self._settled(t)]

    @staticmethod
    def _settled(t: Tracked) -> bool:
        if t.kind == "consultation":
            return t.state in ("final", "cancelled")
        return t.state == "cancelled" or (t.state == "final" and "F" in t.results)

    def explain(self, t: Tracked, readers: set[str]) -> str | None:
        """Why an unfinished order is unfinished, when the reason is known and legitimate."""
        if t.state == "returned":
            return RETURNED
        if t.state in ("queued", "claimed") and t.center and t.center not in readers:
            return f"waiting at {t.center}, which has no simulated reader"
        if t.state in ("queued", "claimed", "ordered") and t.final_at is None:
            return STILL_WORKING
        return None

    def summary(self, readers: set[str]) -> dict[str, Any]:
        by_kind_state: Counter[tuple[str, str]] = Counter((t.kind, t.state) for t in self.orders.values())
        turnaround = [
            (t.final_at - t.queued_at).total_seconds() for t in self.orders.values() if t.final_at and t.queued_at
        ]
        finals = [t for t in self.orders.values() if t.final_at and t.due_at]
        met = sum(1 for t in finals if t.final_at and t.due_at and t.final_at <= t.due_at)
        lost = []
        explained: Counter[str] = Counter()
        for t in self.outstanding():
            reason = self.explain(t, readers)
            if reason is None:
                lost.append(t.accession)
            else:
                explained[reason] += 1
        return {
            "orders": len(self.orders),
            "by_kind_and_state": {f"{k}/{s}": n for (k, s), n in sorted(by_kind_state.items())},
            "hl7_acks": dict(Counter(t.ack for t in self.orders.values() if t.ack)),
            "results_received": sum(len(t.results) for t in self.orders.values()),
            "turnaround_seconds": {q: percentile(turnaround, q) for q in (50, 90, 99)} if turnaround else {},
            "sla_compliance": round(met / len(finals), 4) if finals else None,
            "critical": sum(1 for t in self.orders.values() if t.critical),
            "returned": sum(t.returned for t in self.orders.values()),
            "escalated": sum(t.escalated for t in self.orders.values()),
            "errors": dict(self.errors),
            "never_acknowledged": sum(1 for t in self.orders.values() if t.ack is None),
            # Acknowledged (AA) and not finished at the end: the ones with a known reason (explained) plus the lost.
            "unfinished": len(lost) + sum(explained.values()),
            "explained_unfinished": dict(explained),
            "lost": len(lost),
            "lost_accessions": lost[:20],
            # Every acknowledged order with its kind, for the order-by-order check of the database afterwards.
            "acknowledged": {t.accession: t.kind for t in self.orders.values() if t.ack == "AA"},
            "events_seen": self.events,
        }
