"""A cached bearer token is checked in memory while the database's revocation version has not moved
(SQLite: a counter file every hub process on the database reads); a revocation committed by another process
moves it, and the token ends at the next request. On PostgreSQL every request reads the token's row."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import delete, event

from telenet.services.auth import token_digest
from telenet.store.auth_version import AuthVersion, auth_version
from telenet.store.models import Token

WORKLIST = "/api/v1/centers/NL-C01-K01-IMG/worklist"


@contextlib.contextmanager
def statements_of(engine: Any) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)


async def test_a_cached_token_costs_no_statement_until_a_revocation_moves_it(client: Any, database: Any) -> None:
    headers = await client.login("county_reader")
    assert (await client.get(WORKLIST, headers=headers)).status == 200  # the actor is cached now
    with statements_of(database.engine) as seen:
        assert (await client.get(WORKLIST, headers=headers)).status == 200
    token_reads = [s for s in seen if "tokens" in s]
    versions = auth_version(database.engine)
    if versions.read() is None:  # PostgreSQL: processes on other hosts share no counter
        assert len(token_reads) == 1, "without a shared version every request reads its token row"
    else:
        assert token_reads == [], f"the cached token was read from the database: {token_reads}"

    # Another process logs the token out: its own connection deletes the row, its own handle of the counter
    # (another file descriptor, as in another process) moves the version after the commit.
    token = headers["Authorization"].removeprefix("Bearer ")
    async with database.engine.begin() as conn:
        await conn.execute(delete(Token).where(Token.token_hash == token_digest(token)))
    if versions.path is not None:
        AuthVersion(versions.path, shared=True).bump()
    elif versions.shared:
        versions.bump()
    resp = await client.get(WORKLIST, headers=headers)
    assert resp.status == 401, await resp.text()
    assert (await resp.json())["type"].endswith("bad-token")

    # A logout in this process moves the counter that other processes read (a fresh handle on the file).
    other = await client.login("township_doc")
    assert (await client.get("/api/v1/requests", headers=other)).status == 200
    before = versions.read()
    assert (await client.post("/api/v1/auth/logout", headers=other)).status == 204
    if versions.path is not None:
        after = AuthVersion(versions.path, shared=True).read()
        assert before is not None and after == before + 1
    assert (await client.get("/api/v1/requests", headers=other)).status == 401
