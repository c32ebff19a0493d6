"""Group commit where writers queue: the use cases of concurrent DICOM associations and HL7 connections share
one transaction, each inside its own SAVEPOINT (one failure rolls back only itself), and none is answered
before the shared COMMIT is durable. A group closes a few milliseconds after its first member finished
(``wait_ms``) or when it is full; members run one after another on the group's one connection.

The wait is for company, so it is paid only where company comes: a lone member whose group, and the group
before it, had nobody else commits at once (one association or one HL7 connection sending one instance or
message after another would otherwise wait ``wait_ms`` for each). Writers that arrive while that commit
runs form the next group, and once a group has several members the next ones wait again."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Concatenate, ParamSpec, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from telenet.services.hub import Hub
from telenet.store.write_gate import log_failure

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_WAIT_MS = 2.0
DEFAULT_MAX_MEMBERS = 64


class _Group:
    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.members = 0
        self.closing = False
        self.session: AsyncSession | None = None
        self.connection: AsyncConnection | None = None
        self.committer: asyncio.Task[None] | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.woken = False


class GroupCommit:
    """Shares transactions between concurrent writers; see the module docstring."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        wait_ms: float = DEFAULT_WAIT_MS,
        max_members: int = DEFAULT_MAX_MEMBERS,
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        self._sessions = sessions
        self._notify = notify
        self.wait_ms = wait_ms
        self.max_members = max_members
        self._current: _Group | None = None
        # Members of each committed group (the evidence that groups form; last 1,000).
        self.sizes: list[int] = []
        # Whether the last committed group had more than one member, and the groups that did not wait.
        self._company = True
        self.unwaited = 0

    @asynccontextmanager
    async def member(self) -> AsyncIterator[tuple[AsyncConnection, Callable[[], None]]]:
        """The group's connection for one member's savepoints, and a callback that asks for a wake-up of the
        event fan-out after the commit. Returns (leaves the block) only once the group's commit is durable."""
        group = self._current
        if group is None or group.closing or group.members >= self.max_members:
            group = self._current = _Group()
        group.members += 1
        failed = False
        try:
            async with group.lock:
                if group.connection is None:
                    group.session = self._sessions()
                    group.connection = await group.session.connection()

                def wake() -> None:
                    group.woken = True

                try:
                    yield group.connection, wake
                except BaseException:
                    failed = True
                    raise
        finally:
            if group.committer is None:
                group.committer = asyncio.get_running_loop().create_task(self._commit(group), name="group-commit")
        if not failed:
            await asyncio.shield(group.done)

    async def _commit(self, group: _Group) -> None:
        if self._company or group.members > 1:
            await asyncio.sleep(self.wait_ms / 1000)
        else:
            await asyncio.sleep(0)  # a member that is ready in this loop turn still joins
            self.unwaited += 1
        group.closing = True
        if self._current is group:
            self._current = None
        async with group.lock:  # the members already queued run first
            session = group.session
            try:
                if session is not None:
                    await session.commit()
            except BaseException as exc:
                log_failure(log, "group commit of %d members failed", group.members)
                group.done.set_exception(exc)
                group.done.exception()  # retrieved: members that left early must not log it again
            else:
                group.done.set_result(None)
                self.sizes.append(group.members)
                self._company = group.members > 1
                del self.sizes[:-1000]
            finally:
                if session is not None:
                    await session.close()
        if group.woken and group.done.exception() is None:
            self._notify()


def joined_hub(hub: Hub, connection: AsyncConnection, wake: Callable[[], None]) -> Hub:
    """A hub whose use cases run as savepoints on ``connection`` and whose event wake-ups wait for the
    group's commit (the joined hub never groups again: it already is in a group)."""
    joined = async_sessionmaker(
        bind=connection, expire_on_commit=False, autoflush=False, join_transaction_mode="create_savepoint"
    )
    return dataclasses.replace(
        hub, sessions=joined, read_sessions=joined, on_commit=[wake], group_commit=None, build_views=False
    )


async def in_group(hub: Hub, fn: Callable[Concatenate[Hub, P], Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(hub, ...)`` as one member of the hub's current group (directly when the hub does not group):
    its result is returned once the group's commit is durable."""
    group = hub.group_commit
    if group is None:
        return await fn(hub, *args, **kwargs)
    async with group.member() as (connection, wake):
        result = await fn(joined_hub(hub, connection, wake), *args, **kwargs)
    return result
