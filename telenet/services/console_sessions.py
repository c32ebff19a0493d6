"""Console sessions: a browser's login, stored as a row of the tokens table (kind "console", hashed, with an
expiry), so whatever revokes tokens ends sessions too; and the CSRF token bound to each session."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from telenet.domain.errors import Unauthorized
from telenet.services.auth import hash_password, token_digest, verify_password
from telenet.services.hub import Hub
from telenet.store.models import Token, User

CONSOLE = "console"
# Checked when the user is unknown, so that both paths take the same time.
_UNKNOWN_USER_HASH = hash_password(secrets.token_hex(8))


async def open_session(hub: Hub, username: str, password: str, minutes: int) -> tuple[str, datetime]:
    """Check the password and open a console session; the session value (only ever in the cookie) and its expiry."""
    async with hub.sessions() as session:
        user = (await session.execute(select(User).where(User.username == username))).scalar_one_or_none()
        stored = user.password_hash if user else _UNKNOWN_USER_HASH
        # scrypt costs ~50 ms of CPU: on a worker thread, so a login never stalls the event loop.
        ok = await asyncio.to_thread(verify_password, password, stored) and user is not None
        if not ok or user is None or not user.active:
            raise Unauthorized("unknown user or wrong password", code="bad-credentials")
        value = secrets.token_urlsafe(32)
        now = hub.clock.now()
        expires = now + timedelta(minutes=minutes)
        await session.execute(delete(Token).where(Token.user_id == user.id, Token.expires_at < now))
        session.add(
            Token(token_hash=token_digest(value), user_id=user.id, created_at=now, expires_at=expires, kind=CONSOLE)
        )
        await session.commit()
    return value, expires


async def close_session(hub: Hub, value: str) -> None:
    """Logout: the session's row is deleted, so the cookie is worthless from now on, in every process."""
    digest = token_digest(value)
    async with hub.sessions() as session:
        await session.execute(delete(Token).where(Token.token_hash == digest, Token.kind == CONSOLE))
        await session.commit()
    hub.actor_cache.pop(digest, None)


def csrf_token(secret: bytes, value: str) -> str:
    """The CSRF token of a session: an HMAC of the session under the server secret (nothing to store, and
    useless with any other session)."""
    return hmac.new(secret, b"csrf:" + token_digest(value).encode(), hashlib.sha256).hexdigest()


def csrf_valid(secret: bytes, value: str, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(csrf_token(secret, value), presented or "")
