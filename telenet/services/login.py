"""Login, logout and the account controls that end sessions: the login limiter and lockout, failed-login
audit, password changes, disabling and unlocking accounts.

Revocation deletes the account's rows of the token table (bearer tokens and console sessions alike) and
bumps ``users.auth_epoch``; every hub process checks that epoch on each request
(:func:`telenet.services.auth.authenticate`), so a revoked token stops working at once everywhere.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from telenet.domain.access import Actor, Role
from telenet.domain.errors import Forbidden, Invalid, NotFound, Overloaded, TooManyRequests, Unauthorized
from telenet.domain.ratelimit import LoginLimiter, SlidingWindow
from telenet.services.auth import DUMMY_HASH, hash_password, token_digest, verify_password
from telenet.services.hub import Hub, use_case
from telenet.store.auth_version import mark_revoked
from telenet.store.models import AuditEntry, Institution, Token, User

MIN_PASSWORD_LENGTH = 8


def limiter_of(hub: Hub) -> LoginLimiter:
    """This process's login limiter (made on first use from the hub's options)."""
    if hub.login_limiter is None:
        options = hub.options
        hub.login_limiter = LoginLimiter(
            per_account=SlidingWindow(options.login_attempts_per_account_minute, 60.0),
            per_address=SlidingWindow(options.login_attempts_per_address_minute, 60.0),
        )
    return hub.login_limiter


async def check_password(password: str, stored: str | None) -> bool:
    """scrypt costs ~50 ms of CPU: run it on a worker thread (hashlib releases the GIL) so that logins
    never stall the event loop that serves every other interface."""
    return await asyncio.get_running_loop().run_in_executor(None, verify_password, password, stored)


class PasswordChecks:
    """At most ``slots`` password hashes at once (one per core: more only share the same cores and keep the
    executor's threads from other work), and at most ``max_waiting`` logins waiting for a slot. Past that a
    login is refused at once, before any hashing, as overload (503 with Retry-After): under a burst of logins
    (a shift starting, every client reconnecting after a restart) the hub does not spend its cores on hashes
    whose answers would come after the client gave up, nor starve the orders and studies arriving meanwhile."""

    def __init__(self, slots: int, max_waiting: int) -> None:
        self.slots = slots
        self.max_waiting = max_waiting
        self._free = asyncio.Semaphore(slots)
        self.waiting = 0
        #: Logins refused before hashing because too many were waiting (for ``/metrics`` and the benchmarks).
        self.refused = 0

    def admit(self) -> None:
        """Refuse at once (:class:`Overloaded`) when every slot is busy and the queue is full."""
        if self._free.locked() and self.waiting >= self.max_waiting:
            self.refused += 1
            # About how long the queue takes to drain (50 ms a hash), in whole seconds.
            raise Overloaded(
                "too many logins at once; retry shortly", retry_after=1 + self.waiting // (20 * self.slots)
            )

    async def check(self, password: str, stored: str | None) -> bool:
        self.waiting += 1
        try:
            await self._free.acquire()
        finally:
            self.waiting -= 1
        try:
            return await check_password(password, stored)
        finally:
            self._free.release()


def password_checks_of(hub: Hub) -> PasswordChecks:
    """This process's :class:`PasswordChecks` (made on first use, within the running event loop)."""
    if hub.password_checks is None:
        slots = os.cpu_count() or 1
        hub.password_checks = PasswordChecks(slots, hub.options.login_hash_queue_per_core * slots)
    checks: PasswordChecks = hub.password_checks
    return checks


async def make_password_hash(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Invalid(f"a password has at least {MIN_PASSWORD_LENGTH} characters", code="weak-password")
    return await asyncio.get_running_loop().run_in_executor(None, hash_password, password)


def _login_audit(
    hub: Hub, username: str, user: User | None, path: str | None, remote_addr: str | None, outcome: str
) -> AuditEntry:
    """A login attempt, filed under the account's institution so that its admins see attacks on it."""
    return AuditEntry(
        at=hub.clock.now(),
        actor_id=user.id if user else None,
        actor=username[:64],
        actor_institution_path=path,
        action="auth.login",
        object_type="user",
        object_id=username[:128],
        object_path=path,
        remote_addr=remote_addr,
        outcome=outcome,
        detail=None,
    )


async def _audit_alone(hub: Hub, row: AuditEntry) -> None:
    async with hub.sessions() as session:
        session.add(row)
        await session.commit()


async def login(
    hub: Hub,
    username: str,
    password: str,
    remote_addr: str | None = None,
    *,
    kind: str = "bearer",
    minutes: int | None = None,
) -> dict[str, object]:
    """Exchange a username and password for a bearer token (or, ``kind="console"``, a console session, a row
    of the same table): limited per account and address (429 with Retry-After), locked after repeated
    failures, every failure audited."""
    limiter = limiter_of(hub)
    moment = time.monotonic()
    async with hub.reader() as session:
        row = (
            await session.execute(
                select(User, Institution.path)
                .join(Institution, Institution.id == User.institution_id)
                .where(User.username == username)
            )
        ).one_or_none()
    user, path = (row[0], row[1]) if row is not None else (None, None)
    wait = limiter.retry_after(username, remote_addr, moment)
    if wait:
        await _audit_alone(hub, _login_audit(hub, username, user, path, remote_addr, "rate-limited"))
        raise TooManyRequests("too many login attempts; retry later", retry_after=wait, code="login-rate-limited")
    checks = password_checks_of(hub)
    checks.admit()  # before the limiter counts an attempt: a login refused as overload checked no password
    limiter.hit(username, remote_addr, moment)
    now = hub.clock.now()
    if user is not None and user.locked_until is not None and user.locked_until > now:
        await _audit_alone(hub, _login_audit(hub, username, user, path, remote_addr, "account-locked"))
        raise TooManyRequests(
            "the account is locked after repeated failed logins; an administrator can unlock it",
            retry_after=int((user.locked_until - now).total_seconds()) + 1,
            code="account-locked",
        )
    # Verify against a dummy hash when the user is unknown so both paths take the same time.
    ok = await checks.check(password, user.password_hash if user else DUMMY_HASH)
    if not ok or user is None or not user.active:
        outcome = "bad-credentials" if not ok or user is None else "account-disabled"
        async with hub.sessions() as session:
            if user is not None and not ok:
                await _count_failure(hub, session, user.id)
            session.add(_login_audit(hub, username, user, path, remote_addr, outcome))
            await session.commit()
        raise Unauthorized("unknown user or wrong password", code="bad-credentials")
    token = secrets.token_urlsafe(32)
    expires = now + timedelta(minutes=minutes or hub.options.token_ttl_minutes)
    async with hub.sessions() as session:
        if user.failed_logins or user.locked_until is not None:
            await session.execute(update(User).where(User.id == user.id).values(failed_logins=0, locked_until=None))
        await session.execute(delete(Token).where(Token.user_id == user.id, Token.expires_at < now))
        session.add(
            Token(token_hash=token_digest(token), user_id=user.id, created_at=now, expires_at=expires, kind=kind)
        )
        session.add(_login_audit(hub, username, user, path, remote_addr, "ok"))
        await session.commit()
    return {"token": token, "token_type": "Bearer", "expires_at": expires.isoformat()}


async def _count_failure(hub: Hub, session: AsyncSession, user_id: int) -> None:
    failures = (
        await session.execute(
            update(User)
            .where(User.id == user_id)
            .values(failed_logins=User.failed_logins + 1)
            .returning(User.failed_logins)
        )
    ).scalar_one()
    if failures >= hub.options.login_lockout_failures:
        until = hub.clock.now() + timedelta(minutes=hub.options.login_lockout_minutes)
        await session.execute(update(User).where(User.id == user_id).values(failed_logins=0, locked_until=until))


async def revoke_all(session: AsyncSession, user_id: int) -> int:
    """End every token and console session of an account and make every process re-read it."""
    result: Any = await session.execute(delete(Token).where(Token.user_id == user_id))
    await session.execute(update(User).where(User.id == user_id).values(auth_epoch=User.auth_epoch + 1))
    mark_revoked(session)
    return int(result.rowcount or 0)


async def logout(hub: Hub, actor: Actor, token: str) -> None:
    """End the presented token (bearer or console session) in every process."""
    async with use_case(hub, actor, "auth.logout", "user", actor.username) as uow:
        uow.audit(object_path=actor.institution_path)
        await uow.session.execute(delete(Token).where(Token.token_hash == token_digest(token)))
        mark_revoked(uow.session)
    hub.actor_cache.pop(token_digest(token), None)


async def change_own_password(hub: Hub, actor: Actor, current: str, new: str) -> dict[str, int]:
    """The caller changes its password (knowing the current one); every token and session it has ends."""
    limiter = limiter_of(hub)
    moment = time.monotonic()
    wait = limiter.retry_after(actor.username, actor.remote_addr, moment)
    if wait:
        raise TooManyRequests("too many password attempts; retry later", retry_after=wait, code="login-rate-limited")
    limiter.hit(actor.username, actor.remote_addr, moment)
    async with hub.reader() as session:
        stored = (await session.execute(select(User.password_hash).where(User.id == actor.user_id))).scalar_one()
    if not await check_password(current, stored):
        async with use_case(hub, actor, "user.password", "user", actor.username):
            raise Unauthorized("the current password is wrong", code="bad-credentials")
    hashed = await make_password_hash(new)
    async with use_case(hub, actor, "user.password", "user", actor.username) as uow:
        uow.audit(object_path=actor.institution_path)
        await uow.session.execute(update(User).where(User.id == actor.user_id).values(password_hash=hashed))
        revoked = await revoke_all(uow.session, actor.user_id)
    hub.actor_cache.clear()
    return {"revoked_tokens": revoked}


async def _managed_user(session: AsyncSession, actor: Actor, username: str) -> tuple[User, str]:
    """An account the admin manages: in the admin's subtree."""
    if actor.role is not Role.ADMIN:
        raise Forbidden("only administrators manage accounts", code="forbidden-role")
    row = (
        await session.execute(
            select(User, Institution.path)
            .join(Institution, Institution.id == User.institution_id)
            .where(User.username == username)
            .with_for_update()
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"no user {username!r}")
    user, path = row[0], row[1]
    if not actor.sees_institution(path):
        raise Forbidden(f"user {username!r} is outside your institutions", code="out-of-scope")
    return user, path


async def set_active(hub: Hub, actor: Actor, username: str, active: bool) -> dict[str, Any]:
    """Disable (ending every token and session at once) or enable an account."""
    async with use_case(hub, actor, "user.enable" if active else "user.disable", "user", username) as uow:
        user, path = await _managed_user(uow.session, actor, username)
        uow.audit(object_path=path)
        if not active and user.id == actor.user_id:
            raise Invalid("you cannot disable your own account", code="self-disable")
        user.active = active
        revoked = 0 if active else await revoke_all(uow.session, user.id)
        uow.audit(detail={"revoked_tokens": revoked})
    hub.actor_cache.clear()
    return {"username": username, "active": active, "revoked_tokens": revoked}


async def reset_password(hub: Hub, actor: Actor, username: str, new: str) -> dict[str, Any]:
    """An admin sets another account's password; that account's tokens and sessions end."""
    hashed = await make_password_hash(new)
    async with use_case(hub, actor, "user.password", "user", username) as uow:
        user, path = await _managed_user(uow.session, actor, username)
        uow.audit(object_path=path)
        user.password_hash = hashed
        user.failed_logins = 0
        user.locked_until = None
        revoked = await revoke_all(uow.session, user.id)
    hub.actor_cache.clear()
    return {"username": username, "revoked_tokens": revoked}


async def unlock(hub: Hub, actor: Actor, username: str) -> dict[str, Any]:
    """Lift a lockout left by repeated failed logins."""
    async with use_case(hub, actor, "user.unlock", "user", username) as uow:
        user, path = await _managed_user(uow.session, actor, username)
        uow.audit(
            object_path=path, detail={"was_locked_until": user.locked_until.isoformat() if user.locked_until else None}
        )
        user.failed_logins = 0
        user.locked_until = None
    limiter_of(hub).per_account.forget(username.lower())
    return {"username": username, "locked": False}
