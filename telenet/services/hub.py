"""The service context every use case receives, and the audited unit of work."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from telenet.domain.access import Actor
from telenet.domain.errors import TelenetError
from telenet.domain.ratelimit import LoginLimiter
from telenet.domain.sla import DEFAULT_LEASE_MINUTES, Clock
from telenet.services.audit_writer import AuditWriter
from telenet.services.follow_ups import FollowUps
from telenet.store.auth_version import AuthVersion
from telenet.store.db import SINGLE_STATEMENT
from telenet.store.models import AuditEntry
from telenet.store.write_gate import WriteGate

if TYPE_CHECKING:
    from telenet.services.group_commit import GroupCommit
    from telenet.services.page_cache import PageCache
    from telenet.services.registry_snapshot import RegistryCache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubOptions:
    """The parts of the settings the use cases need (kept apart from protocol settings)."""

    secret: bytes
    token_ttl_minutes: int = 720
    critical_ack_minutes: int = 15
    study_quiet_seconds: float = 60.0
    lease_minutes: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_LEASE_MINUTES))
    login_attempts_per_account_minute: int = 10
    login_attempts_per_address_minute: int = 60
    login_lockout_failures: int = 10
    login_lockout_minutes: float = 30.0
    claim_breach_grace_minutes: float = 15.0
    login_hash_queue_per_core: int = 64


@dataclass
class Hub:
    """What a use case needs: a session factory, the clock, options and the event wake-up."""

    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    options: HubOptions
    dialect: str = "sqlite"
    engine: AsyncEngine | None = None
    # Sessions that never write (token checks, event feeds); the write factory when not given.
    read_sessions: async_sessionmaker[AsyncSession] | None = None
    # Made from read_sessions on first use (see reader); the source tells a copied hub's own sessions apart.
    single_read_sessions: async_sessionmaker[AsyncSession] | None = None
    single_read_source: async_sessionmaker[AsyncSession] | None = None
    # SQLite: the process's queue of writers that ``sessions`` wait in (telenet.store.write_gate).
    write_gate: WriteGate | None = None

    def reader(self, *, single_statement: bool = False) -> AsyncSession:
        """A read session; ``single_statement``: the caller issues one statement, which on SQLite is its own
        snapshot, so no BEGIN is sent (one round trip less)."""
        reads = self.read_sessions
        # Only for read sessions of an engine: a joined hub's sessions (a group's connection) stay as they are.
        if single_statement and reads is not None and isinstance(reads.kw.get("bind"), AsyncEngine):
            if self.single_read_sessions is None or self.single_read_source is not reads:
                self.single_read_sessions = async_sessionmaker(
                    reads.kw["bind"].execution_options(**{SINGLE_STATEMENT: True}),
                    expire_on_commit=False,
                    autoflush=False,
                )
                self.single_read_source = reads
            return self.single_read_sessions()
        return (reads or self.sessions)()

    on_commit: list[Callable[[], None]] = field(default_factory=list)
    # Called inside the transaction of every emitted event (session, hub, event): followers that must commit
    # with the change (the order status outbox). Wired in app.py; they must not emit events themselves.
    event_listeners: list[Callable[[AsyncSession, Hub, Any], Awaitable[None]]] = field(default_factory=list)
    # token digest -> (actor, token expiry, when cached, the account's auth_epoch, the revocation version then):
    # see services.auth.authenticate
    actor_cache: dict[str, tuple[Actor, datetime, float, int, int | None]] = field(default_factory=dict)
    # The database's revocation version (telenet.store.auth_version); None: every token check reads its row.
    auth_version: AuthVersion | None = None
    # Login attempts of this process per account and address (services.login); made on first use.
    login_limiter: LoginLimiter | None = None
    # The process's password checks: how many hash at once and how many may wait (services.login).
    password_checks: Any = None
    # Group-commits the audit rows of read use cases (see read_use_case); None: each row in its own commit.
    audit_writer: AuditWriter | None = None
    # Shares the transactions of concurrent gateway writers (see services.group_commit.in_group).
    group_commit: GroupCommit | None = None
    # Whether commands read their view after commit (REST); gateways' joined hubs skip views they never show.
    build_views: bool = True
    # Follow-up work wired once in the composition root (routed → forwarding, final → fee line and ORU).
    follow_ups: FollowUps = field(default_factory=FollowUps)
    # The registry in memory (services.registry_snapshot); None: read from the tables each time.
    registry: RegistryCache | None = None
    # Worklist pages between the changes that alter them (services.page_cache); None: built each time.
    pages: PageCache | None = None

    def notify_committed(self) -> None:
        """Wake whoever waits for new events (WebSocket fan-out, workers); listeners never raise."""
        for callback in list(self.on_commit):
            try:
                callback()
            except Exception:  # a notification must not fail the command that caused it
                log.exception("on-commit listener failed")


@dataclass
class AuditRecord:
    """What the audit row of the running use case will say; filled in as the use case learns it."""

    action: str
    object_type: str
    object_id: str | None = None
    object_path: str | None = None
    detail: dict[str, Any] | None = None


class UnitOfWork:
    """One transaction of one use case; rolled back unless committed."""

    def __init__(self, hub: Hub, session: AsyncSession, actor: Actor | None, record: AuditRecord | None) -> None:
        self.hub = hub
        self.session = session
        self.actor = actor
        self.record = record
        self.committed = False

    def audit(
        self,
        *,
        object_id: str | None = None,
        object_path: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        if self.record is None:
            return
        if object_id is not None:
            self.record.object_id = object_id
        if object_path is not None:
            self.record.object_path = object_path
        if detail is not None:
            self.record.detail = {**(self.record.detail or {}), **detail}

    async def commit(self) -> None:
        if self.record is not None and self.actor is not None:
            # A Core insert of the row's values: the ORM's unit of work for one append-only row cost more.
            await self.session.execute(_AUDIT_INSERT, _audit_values(self.hub, self.actor, self.record, "ok"))
        await self.session.commit()
        emitted = self.session.info.pop("event_lock", None)
        self.committed = True
        if emitted:
            self.hub.notify_committed()


_AUDIT_INSERT = insert(cast(Table, AuditEntry.__table__))


def _audit_row(hub: Hub, actor: Actor, record: AuditRecord, outcome: str) -> AuditEntry:
    return AuditEntry(**_audit_values(hub, actor, record, outcome))


def audit_values(hub: Hub, actor: Actor, record: AuditRecord, outcome: str = "ok") -> dict[str, Any]:
    """The values of the audit row a use case with ``record`` writes (for a multi-row insert by use cases
    that index many objects at once)."""
    return _audit_values(hub, actor, record, outcome)


@asynccontextmanager
async def use_case(
    hub: Hub, actor: Actor | None, action: str, object_type: str, object_id: str | None = None
) -> AsyncIterator[UnitOfWork]:
    """Run one audited use case: the success row is written in the same transaction as the change;
    a refused or failed attempt is rolled back and audited on its own with the error code as outcome."""
    record = AuditRecord(action=action, object_type=object_type, object_id=object_id) if actor else None
    async with hub.sessions() as session:
        uow = UnitOfWork(hub, session, actor, record)
        try:
            yield uow
            if not uow.committed:
                await uow.commit()
        except TelenetError as exc:
            await session.rollback()
            if actor is not None and record is not None:
                # A refusal names whose data was asked for: file the attempt where the owner's admins see it.
                record.object_path = record.object_path or getattr(exc, "object_path", None)
                await _audit_failure(hub, actor, record, exc.code)
            raise
        except BaseException:
            await session.rollback()
            raise


async def _audit_failure(hub: Hub, actor: Actor, record: AuditRecord, outcome: str) -> None:
    try:
        async with hub.sessions() as session:
            session.add(_audit_row(hub, actor, record, outcome))
            await session.commit()
    except Exception:  # the original error matters more than a failed audit of it
        log.exception("could not audit failed %s", record.action)


def _audit_values(hub: Hub, actor: Actor, record: AuditRecord, outcome: str) -> dict[str, Any]:
    return {
        "at": hub.clock.now(),
        "actor_id": actor.user_id or None,
        "actor": actor.username,
        "actor_institution_path": actor.institution_path,
        "action": record.action,
        "object_type": record.object_type,
        "object_id": record.object_id,
        "object_path": record.object_path,
        "remote_addr": actor.remote_addr,
        "outcome": outcome,
        # An admin's stated reason to see patient data (break-glass) goes with every row of the request.
        "detail": {**(record.detail or {}), "break_glass": actor.break_glass} if actor.break_glass else record.detail,
    }


class ReadUnit(UnitOfWork):
    """The unit of a read use case: a read session (no write lock) and an audit record; nothing to commit.
    The session is made on first use: a read answered from memory (a cached worklist page) makes none."""

    def __init__(
        self, hub: Hub, actor: Actor | None, record: AuditRecord | None, *, single_statement: bool = False
    ) -> None:
        self._session: AsyncSession | None = None
        self._single_statement = single_statement
        super().__init__(hub, None, actor, record)  # type: ignore[arg-type]  # made on first use
        # More audit rows (values of AuditEntry) written with the use case's own row when it succeeds.
        self.more_audit: list[dict[str, Any]] = []

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            self._session = self.hub.reader(single_statement=self._single_statement)
        return self._session

    @session.setter
    def session(self, session: AsyncSession | None) -> None:
        self._session = session

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def commit(self) -> None:
        raise RuntimeError(f"{self.record.action if self.record else 'a read'} is a read use case: it cannot commit")


@asynccontextmanager
async def read_use_case(
    hub: Hub,
    actor: Actor | None,
    action: str,
    object_type: str,
    object_id: str | None = None,
    *,
    single_statement: bool = False,
) -> AsyncIterator[UnitOfWork]:
    """Run one audited use case that only reads: on ``hub.reader()`` (a deferred BEGIN on SQLite, so it never
    queues behind writers); its audit row, success or refusal, is durable before this returns, written by
    the hub's audit writer together with the rows of concurrent requests."""
    record = AuditRecord(action=action, object_type=object_type, object_id=object_id) if actor else None
    try:
        unit = ReadUnit(hub, actor, record, single_statement=single_statement)
        try:
            yield unit
        finally:
            await unit.close()
    except TelenetError as exc:
        if actor is not None and record is not None:
            record.object_path = record.object_path or getattr(exc, "object_path", None)
            try:
                await write_audit(hub, actor, record, exc.code)
            except Exception:  # the original error matters more than a failed audit of it
                log.exception("could not audit failed %s", record.action)
        raise
    if actor is not None and record is not None:
        await write_audit(hub, actor, record, "ok", unit.more_audit)


async def write_audit(
    hub: Hub, actor: Actor, record: AuditRecord, outcome: str, more: list[dict[str, Any]] | None = None
) -> None:
    """One audit row (and ``more`` rows) outside any use case's transaction: through the audit writer, else
    on its own."""
    if hub.audit_writer is not None:
        await hub.audit_writer.write(_audit_values(hub, actor, record, outcome), *(more or ()))
        return
    async with hub.sessions() as session:
        session.add(_audit_row(hub, actor, record, outcome))
        session.add_all(AuditEntry(**row) for row in more or ())
        await session.commit()
