"""The load routing weighs (open requests per center) is counted for the service's centers only, by seeks in
the worklist index: counting by state over every center scanned the whole index, final requests included, so
each order under the write lock cost time in proportion to every request the network ever had."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text, update

from telenet.services import requests, routing
from telenet.services.auth import actor_for_username
from telenet.store.models import Center, Request
from tests.factories import order


async def test_the_load_counts_the_open_requests_of_the_given_centers(demo_hub: Any, database: Any) -> None:
    doc = await actor_for_username(demo_hub, "township_doc")
    made = [await requests.submit(demo_hub, doc, order(patient_id=f"L{n}", serial=n)) for n in range(1, 5)]
    async with demo_hub.sessions() as session:
        await session.execute(update(Request).where(Request.id == int(made[0]["id"])).values(state="final"))
        await session.commit()
        centers = (await session.execute(select(Center.id, Center.service))).all()
        imaging = [cid for cid, service in centers if service == "imaging"]
        expected = dict(
            (
                await session.execute(
                    select(Request.center_id, func.count())
                    .where(Request.state.in_(routing.LOAD_STATES), Request.center_id.in_(imaging))
                    .group_by(Request.center_id)
                )
            ).all()
        )
        load = await routing._load(session, imaging)
        assert sum(load.values()) == 3, "the final request is not open"
        assert load == expected
        assert await routing._load(session, [cid for cid, service in centers if service != "imaging"]) == {}
        assert await routing._load(session, []) == {}


async def test_on_sqlite_the_load_is_read_by_seeks_in_the_worklist_index(make_database: Any) -> None:
    """SQLite only: PostgreSQL's planner chooses by its statistics (the statement is the same)."""
    database = await make_database("sqlite")
    statement = routing._LOAD.params(ids=[1, 2, 3])
    async with database.engine.connect() as conn:
        sql = str(statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        plan = " | ".join(row[-1] for row in (await conn.execute(text("EXPLAIN QUERY PLAN " + sql))).all())
    assert "SEARCH requests USING COVERING INDEX ix_requests_worklist (center_id=? AND state=?)" in plan, plan
