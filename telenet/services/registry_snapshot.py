"""The registry in memory: institutions, centers, agreements, routing rules, AE titles, HL7 facilities and
the fee schedule as one immutable snapshot held by the process, so that routing reads no registry table per
request. The snapshot carries the database's registry version; every process checks that version at most
every ``CHECK_SECONDS`` (one one-row read) and reloads when it moved. A change in this process (``network
load``, an admin's change) invalidates at once.

Changes an admin scheduled for later (``registry_revisions`` with ``valid_from`` after the time they were
made) are held beside the rows: :meth:`RegistrySnapshot.center`, ``institution`` and ``agreements_of`` answer
with the version in force at the time they are asked about."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from telenet.services.registry_state import apply_state
from telenet.store.models import (
    Agreement,
    Center,
    FeeScheduleEntry,
    Institution,
    InstitutionAETitle,
    Network,
    NetworkMember,
    RegistryRevision,
    RegistryVersion,
    RoutingRule,
)

CHECK_SECONDS = 1.0


@dataclass(frozen=True)
class RegistrySnapshot:
    """One version of the registry. The rows are detached ORM objects: read them, never change or add them."""

    version: int
    institutions: Mapping[int, Institution]
    institution_ids: Mapping[str, int]
    centers: Mapping[int, Center]
    center_ids: Mapping[str, int]
    agreements_of_member: Mapping[int, tuple[Agreement, ...]]
    rules_of_member: Mapping[int, tuple[tuple[RoutingRule, str], ...]]
    ae_titles: Mapping[str, int]
    # The character set registered for single AE titles (the others use their institution's dicom_charset).
    ae_charsets: Mapping[str, str]
    facilities: Mapping[str, int]
    fee_schedule: tuple[FeeScheduleEntry, ...]
    # (kind, object id) -> its revisions that may differ from the live row: (valid_from, scheduled, revision,
    # state), in revision order.
    revisions: Mapping[tuple[str, int], tuple[tuple[datetime, bool, int, Mapping[str, Any]], ...]] = field(
        default_factory=dict
    )
    _copies: dict[tuple[str, int, int], Any] = field(default_factory=dict, compare=False, repr=False)
    network_codes: Mapping[int, str] = field(default_factory=lambda: MappingProxyType({}))

    def in_force(self, kind: str, row: Any, at: datetime | None) -> Any:
        """``row`` as the version in force at ``at``: the live row unless a scheduled revision holds then
        (a detached copy with that revision's state, made once per snapshot)."""
        timeline = self.revisions.get((kind, row.id)) if at is not None else None
        if not timeline:
            return row
        chosen = None
        for valid_from, scheduled, number, state in timeline:
            if valid_from <= at:  # type: ignore[operator]
                chosen = (scheduled, number, state)
        if chosen is None or not chosen[0]:
            return row  # applied to the live row when it was made
        key = (kind, row.id, chosen[1])
        copy = self._copies.get(key)
        if copy is None:
            copy = type(row)(**{c.key: getattr(row, c.key) for c in row.__table__.columns})
            apply_state(kind, copy, chosen[2])
            self._copies[key] = copy
        return copy

    def institution(self, institution_id: int, at: datetime | None = None) -> Institution | None:
        inst = self.institutions.get(institution_id)
        return self.in_force("institution", inst, at) if inst is not None else None

    def center(self, center_id: int, at: datetime | None = None) -> tuple[Center, Institution]:
        center = self.in_force("center", self.centers[center_id], at)
        return center, self.in_force("institution", self.institutions[center.institution_id], at)

    def center_by_code(self, code: str, at: datetime | None = None) -> tuple[Center, Institution] | None:
        center_id = self.center_ids.get(code)
        return self.center(center_id, at) if center_id is not None else None

    def centers_of_service(self, service: str, at: datetime | None = None) -> list[tuple[Center, Institution]]:
        return [self.center(c.id, at) for c in self.centers.values() if c.service == service]

    def agreements_of(self, member_id: int, at: datetime | None = None) -> list[Agreement]:
        return [self.in_force("agreement", a, at) for a in self.agreements_of_member.get(member_id, ())]


async def load_snapshot(session: AsyncSession, version: int) -> RegistrySnapshot:
    institutions = {i.id: i for i in (await session.execute(select(Institution))).scalars()}
    centers = {c.id: c for c in (await session.execute(select(Center).order_by(Center.id))).scalars()}
    agreements: dict[int, list[Agreement]] = {}
    for agreement in (await session.execute(select(Agreement).order_by(Agreement.id))).scalars():
        agreements.setdefault(agreement.member_id, []).append(agreement)
    rules: dict[int, list[tuple[RoutingRule, str]]] = {}
    rows = await session.execute(
        select(NetworkMember.institution_id, RoutingRule, Center.code)
        .join(RoutingRule, RoutingRule.network_id == NetworkMember.network_id)
        .join(Center, Center.id == RoutingRule.center_id)
        .order_by(RoutingRule.network_id, RoutingRule.position)
    )
    for member_id, rule, code in rows:
        rules.setdefault(member_id, []).append((rule, code))
    ae_titles: dict[str, int] = {}
    ae_charsets: dict[str, str] = {}
    for ae, inst_id, charset in await session.execute(
        select(InstitutionAETitle.ae_title, InstitutionAETitle.institution_id, InstitutionAETitle.charset)
    ):
        ae_titles[ae] = inst_id
        if charset:
            ae_charsets[ae] = charset
    fees = tuple((await session.execute(select(FeeScheduleEntry).order_by(FeeScheduleEntry.id))).scalars())
    revisions: dict[tuple[str, int], list[tuple[datetime, bool, int, Mapping[str, Any]]]] = {}
    for r in (
        await session.execute(
            select(RegistryRevision)
            .where(
                RegistryRevision.kind.in_(("institution", "center", "agreement")),
                or_(RegistryRevision.valid_to.is_(None), RegistryRevision.valid_from > RegistryRevision.changed_at),
            )
            .order_by(RegistryRevision.kind, RegistryRevision.object_id, RegistryRevision.revision)
        )
    ).scalars():
        revisions.setdefault((r.kind, r.object_id), []).append(
            (r.valid_from, r.valid_from > r.changed_at, r.revision, MappingProxyType(dict(r.data)))
        )
    network_codes = dict((await session.execute(select(Network.id, Network.code))).all())
    session.expunge_all()
    return RegistrySnapshot(
        version=version,
        institutions=MappingProxyType(institutions),
        institution_ids=MappingProxyType({i.code: i.id for i in institutions.values()}),
        centers=MappingProxyType(centers),
        center_ids=MappingProxyType({c.code: c.id for c in centers.values()}),
        agreements_of_member=MappingProxyType({k: tuple(v) for k, v in agreements.items()}),
        rules_of_member=MappingProxyType({k: tuple(v) for k, v in rules.items()}),
        ae_titles=MappingProxyType(ae_titles),
        ae_charsets=MappingProxyType(ae_charsets),
        facilities=MappingProxyType({i.hl7_facility: i.id for i in institutions.values() if i.hl7_facility}),
        fee_schedule=fees,
        revisions=MappingProxyType({k: tuple(v) for k, v in revisions.items() if any(s for _, s, _, _ in v)}),
        network_codes=MappingProxyType(network_codes),
    )


async def current_version(session: AsyncSession) -> int:
    value = (await session.execute(select(RegistryVersion.version).where(RegistryVersion.id == 1))).scalar_one_or_none()
    return int(value or 0)


async def bump_version(session: AsyncSession, now: Any) -> None:
    """Mark the registry changed, in the transaction of the change (every process reloads its snapshot)."""
    result = await session.execute(
        update(RegistryVersion)
        .where(RegistryVersion.id == 1)
        .values(version=RegistryVersion.version + 1, changed_at=now)
    )
    if not getattr(result, "rowcount", 1):
        highest = (await session.execute(select(func.max(RegistryVersion.version)))).scalar_one_or_none()
        session.add(RegistryVersion(id=1, version=int(highest or 0) + 1, changed_at=now))


class RegistryCache:
    """The process's snapshot, reloaded when the database's version moved (checked at most every second)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], check_seconds: float = CHECK_SECONDS) -> None:
        self._sessions = sessions
        self.check_seconds = check_seconds
        self._snapshot: RegistrySnapshot | None = None
        self._checked_at = float("-inf")
        self._lock: asyncio.Lock | None = None
        self.loads = 0

    def invalidate(self) -> None:
        """Check the version at the next use (a change committed by this process)."""
        self._checked_at = float("-inf")

    async def get(self) -> RegistrySnapshot:
        snapshot = self._snapshot
        if snapshot is not None and time.monotonic() - self._checked_at < self.check_seconds:
            return snapshot
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            snapshot = self._snapshot
            if snapshot is not None and time.monotonic() - self._checked_at < self.check_seconds:
                return snapshot
            checked = time.monotonic()
            async with self._sessions() as session:
                version = await current_version(session)
                if snapshot is None or snapshot.version != version:
                    snapshot = await load_snapshot(session, version)
                    self.loads += 1
            self._snapshot = snapshot
            self._checked_at = checked
            return snapshot
