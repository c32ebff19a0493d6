"""Console sessions: a browser's login, stored as a row of the tokens table (kind "console", hashed, with an
expiry), so whatever revokes tokens ends sessions too; and the CSRF token bound to each session."""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime

from sqlalchemy import delete

from telenet.services import login
from telenet.services.auth import token_digest
from telenet.services.hub import Hub
from telenet.store.auth_version import mark_revoked
from telenet.store.models import Token

CONSOLE = "console"


async def open_session(
    hub: Hub, username: str, password: str, minutes: int, remote_addr: str | None = None
) -> tuple[str, datetime]:
    """Open a console session through the same login as the API (limits, lockout, audit, the slow hash off
    the event loop); the session value (only ever in the cookie) and its expiry."""
    issued = await login.login(hub, username, password, remote_addr, kind=CONSOLE, minutes=minutes)
    return str(issued["token"]), datetime.fromisoformat(str(issued["expires_at"]))


async def close_session(hub: Hub, value: str) -> None:
    """Logout: the session's row is deleted, so the cookie is worthless from now on, in every process."""
    digest = token_digest(value)
    async with hub.sessions() as session:
        await session.execute(delete(Token).where(Token.token_hash == digest, Token.kind == CONSOLE))
        mark_revoked(session)
        await session.commit()
    hub.actor_cache.pop(digest, None)


def csrf_token(secret: bytes, value: str) -> str:
    """The CSRF token of a session: an HMAC of the session under the server secret (nothing to store, and
    useless with any other session)."""
    return hmac.new(secret, b"csrf:" + token_digest(value).encode(), hashlib.sha256).hexdigest()


def csrf_valid(secret: bytes, value: str, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(csrf_token(secret, value), presented or "")
