"""Accounts: password hashing (stdlib scrypt), bearer tokens (random, stored hashed), user creation."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import replace
from datetime import date

from sqlalchemy import bindparam, delete, select, update

from telenet.domain.access import Actor, Role
from telenet.domain.errors import Invalid, NotFound, Unauthorized
from telenet.services import practitioners
from telenet.services.hub import Hub, use_case
from telenet.store.auth_version import mark_revoked
from telenet.store.models import Center, Institution, Token, User, UserCenter

# scrypt cost: n=2**14, r=8, p=1 is the floor OWASP names for scrypt; ~50 ms and 16 MiB here.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def hash_password(password: str, *, n: int = _SCRYPT_N) -> str:
    """The stored form of ``password``: scrypt with its parameters (a lower ``n`` only for test accounts)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    salt_b64, digest_b64 = base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    return f"scrypt${n}${_SCRYPT_R}${_SCRYPT_P}${salt_b64}${digest_b64}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest_b64)
        actual = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt_b64),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(expected, actual)


def token_digest(token: str) -> str:
    """Tokens carry 256 random bits, so a plain SHA-256 is enough to store them (no need to slow it)."""
    return hashlib.sha256(token.encode()).hexdigest()


DUMMY_HASH = hash_password(secrets.token_hex(8))


# How long a token's actor is reused at most (revocation and scope changes are seen at once through the
# account's auth_epoch; this bounds what changes without it, such as a renamed institution).
ACTOR_CACHE_SECONDS = 15.0
ACTOR_CACHE_SIZE = 10_000

# The statements of a token check, built once (with the digest or user id bound at execution): building the
# joins and comparisons was half of a check's time, and every open WebSocket re-checks its token every few
# seconds (2,233 followers at the province peak: a fifth of the event loop).
_EPOCH_OF_TOKEN = (
    select(User.auth_epoch, User.active)
    .join(Token, Token.user_id == User.id)
    .where(Token.token_hash == bindparam("digest"))
)
_TOKEN_USER_INSTITUTION = (
    select(Token, User, Institution)
    .join(User, User.id == Token.user_id)
    .join(Institution, Institution.id == User.institution_id)
    .where(Token.token_hash == bindparam("digest"))
)
_CENTER_CODES = (
    select(Center.code)
    .join(UserCenter, UserCenter.center_id == Center.id)
    .where(UserCenter.user_id == bindparam("uid"))
)


async def authenticate(hub: Hub, token: str, remote_addr: str | None = None) -> Actor:
    """The actor behind a bearer token (or console session); 401 when unknown, revoked or expired.

    The actor (user, institution, centers) is cached per token with the database's revocation version
    (:mod:`telenet.store.auth_version`), which every logout, disabling, password change and scope change
    moves after its commit. While the version has not moved, a cached token is checked in memory only (its
    expiry, its age bound); when it moved — or where no shared version exists (PostgreSQL) — the token's row
    and its account's ``auth_epoch`` are read in one indexed lookup, so a revoked token ends at once in
    every hub process, and a scope change reloads the actor."""
    digest = token_digest(token)
    now = hub.clock.now()
    versions = hub.auth_version
    version = versions.read() if versions is not None else None
    cached = hub.actor_cache.get(digest)
    if cached is not None:
        actor, expires_at, cached_at, epoch, seen = cached
        if time.monotonic() - cached_at < ACTOR_CACHE_SECONDS:
            if version is not None and version == seen:
                if expires_at <= now:
                    raise Unauthorized("the bearer token has expired", code="token-expired")
                return _from(actor, remote_addr)
            async with hub.reader() as session:
                current = (await session.execute(_EPOCH_OF_TOKEN, {"digest": digest})).one_or_none()
            if current is not None and current.active and current.auth_epoch == epoch:
                if expires_at <= now:
                    raise Unauthorized("the bearer token has expired", code="token-expired")
                hub.actor_cache[digest] = (actor, expires_at, cached_at, epoch, version)
                return _from(actor, remote_addr)
        hub.actor_cache.pop(digest, None)
    async with hub.reader() as session:
        row = (await session.execute(_TOKEN_USER_INSTITUTION, {"digest": digest})).one_or_none()
        if row is None:
            raise Unauthorized("unknown or revoked bearer token", code="bad-token")
        tok, user, inst = row
        if tok.expires_at <= now:
            raise Unauthorized("the bearer token has expired", code="token-expired")
        if not user.active:
            raise Unauthorized("the account is disabled", code="bad-token")
        actor = await _actor(session, user, inst, remote_addr)
    if len(hub.actor_cache) >= ACTOR_CACHE_SIZE:
        hub.actor_cache.clear()
    hub.actor_cache[digest] = (actor, tok.expires_at, time.monotonic(), user.auth_epoch, version)
    return actor


def _from(actor: Actor, remote_addr: str | None) -> Actor:
    """The cached actor as seen from ``remote_addr``: the same (frozen) object when it already is, as for the
    repeated requests of one client, else a copy (``dataclasses.replace`` was a tenth of a cached check)."""
    return actor if actor.remote_addr == remote_addr else replace(actor, remote_addr=remote_addr)


async def actor_for_username(hub: Hub, username: str, remote_addr: str | None = None) -> Actor:
    """The actor of a service account, for gateways acting on behalf of an institution."""
    async with hub.reader() as session:
        row = (
            await session.execute(
                select(User, Institution)
                .join(Institution, Institution.id == User.institution_id)
                .where(User.username == username)
            )
        ).one_or_none()
        if row is None:
            raise NotFound(f"no user {username!r}")
        return await _actor(session, row[0], row[1], remote_addr)


async def _actor(session: object, user: User, inst: Institution, remote_addr: str | None) -> Actor:
    from sqlalchemy.ext.asyncio import AsyncSession

    assert isinstance(session, AsyncSession)
    centers = (await session.execute(_CENTER_CODES, {"uid": user.id})).scalars().all()
    return Actor(
        user_id=user.id,
        username=user.username,
        role=Role(user.role),
        institution_id=inst.id,
        institution_code=inst.code,
        institution_path=inst.path,
        center_codes=frozenset(centers),
        title=user.title,
        practice_since=user.practice_since,
        display_name=user.display_name,
        remote_addr=remote_addr,
    )


async def add_user(
    hub: Hub,
    *,
    username: str,
    role: str,
    institution: str,
    password: str | None,
    centers: list[str] | tuple[str, ...] = (),
    title: str | None = None,
    practice_since: date | None = None,
    display_name: str | None = None,
    actor: Actor | None = None,
) -> int:
    """Create or update an account (the CLI's ``telenet user add``); centers only for readers/coordinators."""
    try:
        role_value = Role(role)
    except ValueError:
        raise Invalid(f"unknown role {role!r}; one of {', '.join(r.value for r in Role)}") from None
    if centers and role_value not in (Role.READER, Role.COORDINATOR):
        raise Invalid("only readers and coordinators are bound to centers")
    if not 3 <= len(username) <= 64:
        raise Invalid("a username has 3 to 64 characters")
    hashed = None
    if password is not None:
        if len(password) < 8:
            raise Invalid("a password has at least 8 characters")
        hashed = await asyncio.get_running_loop().run_in_executor(None, hash_password, password)
    async with use_case(hub, actor, "user.add", "user", username) as uow:
        session = uow.session
        inst = (await session.execute(select(Institution).where(Institution.code == institution))).scalar_one_or_none()
        if inst is None:
            raise Invalid(f"institution {institution!r} does not exist")
        uow.audit(object_path=inst.path)
        center_ids = []
        for code in centers:
            center = (await session.execute(select(Center).where(Center.code == code))).scalar_one_or_none()
            if center is None:
                raise Invalid(f"center {code!r} does not exist")
            center_ids.append(center.id)
        user = (await session.execute(select(User).where(User.username == username))).scalar_one_or_none()
        if user is None:
            user = User(
                username=username,
                created_at=hub.clock.now(),
                active=True,
                role=role_value.value,
                institution_id=inst.id,
            )
            session.add(user)
        user.role = role_value.value
        user.institution_id = inst.id
        user.title = title if title is not None else user.title
        user.practice_since = practice_since if practice_since is not None else user.practice_since
        user.display_name = display_name if display_name is not None else user.display_name
        if hashed is not None:
            user.password_hash = hashed
        await session.flush()
        # A changed password ends the account's tokens and sessions; any change (role, centers) makes every
        # process reload the actor behind the account's remaining tokens.
        if hashed is not None:
            await session.execute(delete(Token).where(Token.user_id == user.id))
        await session.execute(update(User).where(User.id == user.id).values(auth_epoch=User.auth_epoch + 1))
        mark_revoked(session)
        if title is not None or practice_since is not None:
            await practitioners.upsert(
                session,
                user.id,
                now=hub.clock.now(),
                by=actor.username if actor else "cli",
                title=title,
                practice_since=practice_since,
            )
        await session.execute(delete(UserCenter).where(UserCenter.user_id == user.id))
        for center_id in center_ids:
            session.add(UserCenter(user_id=user.id, center_id=center_id))
        user_id = user.id
    return user_id
