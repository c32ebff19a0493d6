"""The audit trail is append-only in the database (created from the models or by the migrations), and a
denied attempt is filed where the owner's admins see it."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from telenet.store.models import AuditEntry
from tests.conftest import engine_params
from tests.integration.test_requests_api import create


async def _one_row(engine: Any) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO audit (at, actor, action, object_type, outcome) "
                "VALUES (CURRENT_TIMESTAMP, 'tester', 'test.write', 'test', 'ok')"
            )
        )


@pytest.mark.parametrize("migrate", [False, True], ids=["models", "migrations"])
@pytest.mark.parametrize("kind", engine_params())
async def test_audit_rows_cannot_be_changed_or_deleted(make_database: Any, kind: str, migrate: bool) -> None:
    db = await make_database(kind, migrate=migrate)
    await _one_row(db.engine)
    statements = ["UPDATE audit SET outcome = 'forged'", "DELETE FROM audit"]
    if kind == "postgres":
        statements.append("TRUNCATE audit")
    for statement in statements:
        with pytest.raises(DBAPIError) as refused:
            async with db.engine.begin() as conn:
                await conn.execute(text(statement))
        assert "append-only" in str(refused.value), statement
    async with db.engine.connect() as conn:
        assert (await conn.execute(text("SELECT outcome FROM audit"))).scalars().all() == ["ok"]


async def test_a_denied_read_is_filed_under_the_owner_where_its_admins_see_it(client: Any) -> None:
    view = await create(client)
    outsider = await client.login("township_doc3")
    assert (await client.get(f"/api/v1/requests/{view['id']}", headers=outsider)).status == 403
    async with client.hub.sessions() as session:
        row = (
            await session.execute(
                select(AuditEntry).where(AuditEntry.actor == "township_doc3", AuditEntry.outcome == "scope")
            )
        ).scalar_one()
    assert row.object_path == "/NL-PROV/NL-C01/NL-C01-K01/NL-C01-K01-T01/"
    assert row.actor_institution_path != row.object_path
    listed = await client.get("/api/v1/audit?action=" + row.action, headers=await client.login("county_admin"))
    assert any(item["actor"] == "township_doc3" for item in (await listed.json())["items"])
