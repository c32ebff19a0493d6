"""The operational figures behind ``GET /metrics``: computed from the database at scrape time, plus
in-process tallies and probes that other parts of the hub register. No Prometheus import here: the API
layer turns these neutral families into the Prometheus text format.

Hooks for the gateways (wired in ``telenet/app.py``, the composition root, which gets the registry of an
application with ``telenet.api.fee_routes.metrics_registry(app)`` and hands it to them):

- an in-process counter: ``tally = registry.tally("telenet_dicom_instances_received_total", "help",
  ("calling_ae",))`` once, then ``tally.inc(calling_ae="C01K01T01")`` per event (values live as long as
  the process, like any Prometheus counter);
- a figure read at scrape time, e.g. the HL7 outbox backlog or the DICOM forwarding queue:
  ``registry.add_probe(probe)`` with ``async def probe(hub) -> list[Family]``. A failing probe is logged
  and skipped; it never breaks the scrape of the others.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import func, select

from telenet.services.hub import Hub
from telenet.store.models import Center, CriticalFinding, Event, Report, Request

log = logging.getLogger(__name__)

Kind = Literal["gauge", "counter"]
Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Sample:
    labels: Labels
    value: float


@dataclass(frozen=True)
class Family:
    """One metric: its name (counters end in ``_total``), type, help text, label names and samples."""

    name: str
    kind: Kind
    help: str
    label_names: tuple[str, ...] = ()
    samples: tuple[Sample, ...] = ()


Probe = Callable[[Hub], Awaitable[list[Family]]]


@dataclass
class Tally:
    """An in-process counter with labels; only goes up."""

    name: str
    help: str
    label_names: tuple[str, ...] = ()
    values: dict[Labels, float] = field(default_factory=dict)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name} takes the labels {self.label_names}, got {tuple(labels)}")
        key = tuple((name, str(labels[name])) for name in self.label_names)
        self.values[key] = self.values.get(key, 0.0) + amount

    def family(self) -> Family:
        samples = tuple(Sample(key, value) for key, value in sorted(self.values.items()))
        return Family(self.name, "counter", self.help, self.label_names, samples)


class MetricsRegistry:
    """What one hub exposes: the database figures, then every registered probe and tally."""

    def __init__(self) -> None:
        self._tallies: dict[str, Tally] = {}
        self._probes: list[Probe] = []

    def tally(self, name: str, help: str, label_names: Iterable[str] = ()) -> Tally:
        """The counter ``name``, created on first use (asking again returns the same one)."""
        names = tuple(label_names)
        found = self._tallies.get(name)
        if found is None:
            found = self._tallies[name] = Tally(name, help, names)
        elif found.label_names != names:
            raise ValueError(f"{name} is already registered with labels {found.label_names}")
        return found

    def add_probe(self, probe: Probe) -> None:
        self._probes.append(probe)

    async def collect(self, hub: Hub) -> list[Family]:
        families = await database_families(hub)
        for probe in self._probes:
            try:
                families.extend(await probe(hub))
            except Exception:  # one broken probe must not take the whole scrape down
                log.exception("metrics probe %r failed", probe)
        families.extend(t.family() for t in self._tallies.values())
        families.extend(write_queue_families(hub))
        families.extend(login_queue_families(hub))
        if hub.pages is not None:
            families.append(
                Family(
                    "telenet_worklist_pages_total",
                    "counter",
                    "Worklist page reads, served from this process's memory (hit) or built from the database",
                    ("outcome",),
                    (Sample((("outcome", "hit"),), float(hub.pages.hits)),
                     Sample((("outcome", "built"),), float(hub.pages.misses))),
                )
            )  # fmt: skip
        return families


def write_queue_families(hub: Hub) -> list[Family]:
    """SQLite: the process's queue of writers waiting for the write lock (``telenet.store.write_gate``)."""
    gate = hub.write_gate
    if gate is None:
        return []
    return [
        Family("telenet_write_queue_waiting", "gauge", "Writers of this process waiting for SQLite's write lock",
               samples=(Sample((), float(gate.waiting)),)),
        Family("telenet_write_queue_waited_total", "counter", "Writers that had to wait for the write lock",
               samples=(Sample((), float(gate.waited)),)),
        Family("telenet_write_queue_refused_total", "counter",
               "Writers refused at once because the queue was full (answered as overload)",
               samples=(Sample((), float(gate.refused)),)),
        Family("telenet_write_queue_timeouts_total", "counter",
               "Writers that waited out the lock wait in the queue (answered as overload)",
               samples=(Sample((), float(gate.timed_out)),)),
        Family("telenet_write_queue_holds_total", "counter", "Times a writer of this process held the write lock",
               samples=(Sample((), float(gate.holds)),)),
        Family("telenet_write_queue_held_seconds_total", "counter",
               "Seconds the write lock was held by this process's writers",
               samples=(Sample((), gate.held_s),)),
        Family("telenet_write_queue_handover_seconds_total", "counter",
               "Of those, seconds between handing the lock to the next writer and that writer running again",
               samples=(Sample((), gate.handover_s),)),
        Family("telenet_write_queue_longest_hold_seconds", "gauge", "The longest hold of the write lock so far",
               samples=(Sample((), gate.longest_hold_s),)),
    ]  # fmt: skip


def login_queue_families(hub: Hub) -> list[Family]:
    """Logins waiting for a password hash, and those refused before hashing as overload (services.login)."""
    checks = hub.password_checks
    if checks is None:
        return []
    return [
        Family("telenet_login_hash_waiting", "gauge", "Logins of this process waiting for a password hash slot",
               samples=(Sample((), float(checks.waiting)),)),
        Family("telenet_login_refused_overload_total", "counter",
               "Logins refused before hashing because too many were waiting (503)",
               samples=(Sample((), float(checks.refused)),)),
    ]  # fmt: skip


def _per_center(codes: list[str], values: dict[str, float]) -> tuple[Sample, ...]:
    return tuple(Sample((("center", code),), float(values.get(code, 0))) for code in codes)


async def database_families(hub: Hub) -> list[Family]:
    """Queue depth, claimed items and oldest waiting age per center; claims, finals and SLA breaches per
    center since the start (counters read from the append-only events and reports); open requests by
    state; unacknowledged critical findings."""
    now = hub.clock.now()
    async with hub.reader() as session:
        centers = dict((await session.execute(select(Center.id, Center.code).order_by(Center.code))).all())
        codes = list(centers.values())
        by_state = (
            await session.execute(
                select(Request.center_id, Request.state, func.count(), func.min(Request.queued_at))
                .where(Request.state.in_(("ordered", "queued", "claimed")))
                .group_by(Request.center_id, Request.state)
            )
        ).all()
        finals = (
            await session.execute(
                select(Report.center_id, func.count()).where(Report.status == "final").group_by(Report.center_id)
            )
        ).all()
        center_of_event = Event.data["center"].as_string()
        event_counts = (
            await session.execute(
                select(Event.name, center_of_event, func.count())
                .where(Event.name.in_(("request.claimed", "request.sla_breached")))
                .group_by(Event.name, center_of_event)
            )
        ).all()
        open_critical = (
            await session.execute(
                select(func.count()).select_from(CriticalFinding).where(CriticalFinding.acknowledged_at.is_(None))
            )
        ).scalar_one()
    queued: dict[str, float] = {}
    claimed: dict[str, float] = {}
    oldest: dict[str, float] = {}
    states: dict[str, float] = {"ordered": 0, "queued": 0, "claimed": 0}
    for center_id, state, count, first_queued in by_state:
        code = centers[center_id]
        states[state] += count
        if state == "queued":
            queued[code] = count
            if first_queued is not None:
                oldest[code] = max(0.0, (now - first_queued).total_seconds())
        elif state == "claimed":
            claimed[code] = count
    claims = {code: float(n) for name, code, n in event_counts if name == "request.claimed" and code}
    breaches = {code: float(n) for name, code, n in event_counts if name == "request.sla_breached" and code}
    final_counts = {centers[center_id]: float(n) for center_id, n in finals}
    center = ("center",)
    return [
        Family(
            "telenet_queue_depth",
            "gauge",
            "Requests waiting in a center's queue (queued)",
            center,
            _per_center(codes, queued),
        ),
        Family(
            "telenet_queue_claimed",
            "gauge",
            "Requests claimed by a reader of the center",
            center,
            _per_center(codes, claimed),
        ),
        Family(
            "telenet_queue_oldest_waiting_seconds",
            "gauge",
            "Age of the longest-waiting queued request of the center since it was queued (0 when empty)",
            center,
            _per_center(codes, oldest),
        ),
        Family(
            "telenet_claims_total",
            "counter",
            "Claims taken at the center (renewals not counted)",
            center,
            _per_center(codes, claims),
        ),
        Family(
            "telenet_finals_total",
            "counter",
            "Final reports signed at the center",
            center,
            _per_center(codes, final_counts),
        ),
        Family(
            "telenet_sla_breaches_total",
            "counter",
            "SLA breaches recorded at the center",
            center,
            _per_center(codes, breaches),
        ),
        Family(
            "telenet_open_requests",
            "gauge",
            "Requests not yet finished, by state",
            ("state",),
            tuple(Sample((("state", s),), v) for s, v in states.items()),
        ),
        Family(
            "telenet_critical_unacknowledged",
            "gauge",
            "Critical findings (危急值) not yet acknowledged by the requesting side",
            (),
            (Sample((), float(open_critical)),),
        ),
    ]
