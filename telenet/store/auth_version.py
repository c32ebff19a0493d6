"""The revocation version: a counter every hub process on one database can read without a database round
trip, moved after every commit that ends tokens or changes an account's scope (logout, disable, password,
roles and centers). A process reuses a cached token check while the version has not moved.

- SQLite file: an 8-byte counter in ``<db>.auth-version`` beside the database. Every process that opens the
  database is on the same host, so a ``pread`` of the shared page cache is exact: the revoker moves it after
  its commit and before it answers, and any request that arrives afterwards, in any process, sees it.
- In-memory SQLite: one process, a counter in memory.
- PostgreSQL (processes on several hosts): no shared counter here; :meth:`AuthVersion.read` answers None
  and every request checks its token row (one indexed read), which is exact across hosts.

A process killed between its commit and the move leaves the others trusting a revoked token until their
cached entry's age bound (``services.auth.ACTOR_CACHE_SECONDS``).
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

_REVOKED = "telenet_auth_revoked"


class AuthVersion:
    """The counter of one database (see the module's docstring)."""

    def __init__(self, path: Path | None, *, shared: bool) -> None:
        self.path = path
        self.shared = shared  # False: this process cannot see the others' revocations (PostgreSQL)
        self._local = 0
        self._fd: int | None = None
        self._lock = threading.Lock()

    def _open(self) -> int:
        if self._fd is None:
            assert self.path is not None
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            with self._lock:
                if self._fd is None:
                    self._fd = fd
                else:
                    os.close(fd)
        return self._fd

    def read(self) -> int | None:
        """The current version; None when it cannot be known without the database."""
        if not self.shared:
            return None
        if self.path is None:
            return self._local
        try:
            raw = os.pread(self._open(), 8, 0)
        except OSError:
            return None
        return int.from_bytes(raw, "little") if len(raw) == 8 else 0

    def bump(self) -> None:
        """Move the version (after the commit of a revocation, before anyone is told it succeeded)."""
        self._local += 1
        if self.path is None:
            return
        try:
            fd = self._open()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                raw = os.pread(fd, 8, 0)
                current = int.from_bytes(raw, "little") if len(raw) == 8 else 0
                os.pwrite(fd, (current + 1).to_bytes(8, "little"), 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            # Without the file the others fall back to their age bound; the revocation itself is committed.
            self.shared = False


_VERSIONS: dict[str, AuthVersion] = {}
_VERSIONS_LOCK = threading.Lock()


def auth_version(engine: AsyncEngine | Engine) -> AuthVersion:
    """The revocation version of ``engine``'s database (one object per database per process)."""
    url = engine.url
    key = url.render_as_string(hide_password=True)
    with _VERSIONS_LOCK:
        found = _VERSIONS.get(key)
        if found is None:
            if url.get_backend_name() != "sqlite":
                found = AuthVersion(None, shared=False)
            elif not url.database or url.database == ":memory:" or url.database.startswith("file::memory:"):
                found = AuthVersion(None, shared=True)
            else:
                database = Path(url.database)
                found = AuthVersion(database.parent / f"{database.name}.auth-version", shared=True)
            _VERSIONS[key] = found
        return found


def mark_revoked(session: AsyncSession | Session) -> None:
    """The running transaction ends tokens or changes an account's scope: move the version at its commit."""
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    sync.info[_REVOKED] = True


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if not session.info.pop(_REVOKED, False):
        return
    bind: Any = session.get_bind()
    engine = getattr(bind, "engine", bind)
    auth_version(engine).bump()


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_REVOKED, None)
