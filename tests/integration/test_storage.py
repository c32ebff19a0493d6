"""Storage on both engines: migrations match the models, network load is all-or-nothing and idempotent."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select, text

from telenet.domain.errors import Invalid
from telenet.services.auth import add_user
from telenet.services.login import login as issue_token
from telenet.services.network import load_network
from telenet.store.models import Agreement, Base, Center, Institution, InstitutionAETitle, User, UserCenter
from tests.conftest import engine_params


@pytest.mark.parametrize("kind", engine_params())
async def test_migrations_build_exactly_the_models(make_database: Any, kind: str) -> None:
    db = await make_database(kind, migrate=True)

    def diff(sync_conn: Any) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(sync_conn), Base.metadata))

    async with db.engine.connect() as conn:
        assert await conn.run_sync(diff) == []
        if kind == "sqlite":
            mode = (await conn.execute(text("PRAGMA journal_mode"))).scalar_one()
            assert mode == "wal"


async def _count(hub: Any, model: Any) -> int:
    async with hub.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def test_load_demo_network_and_idempotence(hub: Any, demo_doc: dict[str, Any]) -> None:
    first = await load_network(hub, demo_doc)
    assert first.counts["institutions"]["created"] == 43
    assert await _count(hub, Institution) == 43
    second = await load_network(hub, demo_doc)
    assert second.changed == 0, second.counts
    assert await _count(hub, Institution) == 43
    assert await _count(hub, InstitutionAETitle) == 43


async def test_subtree_is_one_prefix_query(hub: Any, demo_doc: dict[str, Any]) -> None:
    await load_network(hub, demo_doc)
    async with hub.sessions() as session:
        county = (await session.execute(select(Institution).where(Institution.code == "NL-C01-K01"))).scalar_one()
        assert county.path == "/NL-PROV/NL-C01/NL-C01-K01/"
        under = await session.execute(select(Institution.code).where(Institution.path.startswith(county.path)))
        codes = set(under.scalars())
    assert len(codes) == 10 and "NL-C01-K01-T01-V02" in codes and "NL-C01-K02" not in codes


async def test_reparenting_moves_the_subtree(hub: Any, demo_doc: dict[str, Any]) -> None:
    await load_network(hub, demo_doc)
    doc = copy.deepcopy(demo_doc)
    moved = next(i for i in doc["institutions"] if i["code"] == "NL-C01-K01-T01")
    moved["parent"] = "NL-C01-K02"
    await load_network(hub, doc)
    async with hub.sessions() as session:
        path = (
            await session.execute(select(Institution.path).where(Institution.code == "NL-C01-K01-T01-V01"))
        ).scalar_one()
    assert path == "/NL-PROV/NL-C01/NL-C01-K02/NL-C01-K01-T01/NL-C01-K01-T01-V01/"


async def test_broken_file_lists_every_error_and_loads_nothing(hub: Any, demo_doc: dict[str, Any]) -> None:
    doc = copy.deepcopy(demo_doc)
    doc["institutions"][3]["parent"] = "NOWHERE"
    doc["institutions"][4]["code"] = doc["institutions"][5]["code"]
    doc["networks"][0]["agreements"][2]["valid_from"] = "2030-01-01"
    doc["centers"][1]["institution"] = "GHOST"
    with pytest.raises(Invalid) as caught:
        await load_network(hub, doc)
    locations = {e["location"] for e in caught.value.details}
    assert {
        "/institutions/3/parent",
        "/institutions/4/code",
        "/institutions/5/code",
        "/networks/0/agreements/2/valid_to",
        "/centers/1/institution",
    } <= locations
    assert await _count(hub, Institution) == 0
    assert await _count(hub, Center) == 0


async def test_schema_errors_come_first_with_locations(hub: Any, demo_doc: dict[str, Any]) -> None:
    doc = copy.deepcopy(demo_doc)
    doc["institutions"][0]["tier"] = "galaxy"
    doc["centers"][0]["capacity"] = 0
    with pytest.raises(Invalid) as caught:
        await load_network(hub, doc)
    locations = {e["location"] for e in caught.value.details}
    assert "/institutions/0/tier" in locations and "/centers/0/capacity" in locations
    assert await _count(hub, Institution) == 0


async def test_fee_prices_are_versioned_not_edited(hub: Any, demo_doc: dict[str, Any]) -> None:
    await load_network(hub, demo_doc)
    doc = copy.deepcopy(demo_doc)
    doc["fee_schedule"][0]["price_fen"] += 100
    with pytest.raises(Invalid) as caught:
        await load_network(hub, doc)
    assert caught.value.details[0]["location"] == "/fee_schedule/0/price_fen"


async def test_an_ae_title_of_another_institution_is_refused(hub: Any, demo_doc: dict[str, Any]) -> None:
    await load_network(hub, demo_doc)
    doc = {
        "format": "telenet-network/1",
        "institutions": [
            {
                "code": "NL-C01-K01-T09",
                "name": "新乡镇卫生院",
                "tier": "township",
                "parent": "NL-C01-K01",
                "kind": "township_health_center",
                "grade": "1A",
                "ae_titles": ["C01K01T01"],
            }
        ],
    }
    with pytest.raises(Invalid) as caught:
        await load_network(hub, doc)
    assert caught.value.details == [
        {
            "location": "/institutions/0/ae_titles/0",
            "message": "AE title 'C01K01T01' belongs to NL-C01-K01-T01",
        }
    ]


async def test_agreement_rules_enforced_by_the_database(hub: Any, demo_doc: dict[str, Any]) -> None:
    await load_network(hub, demo_doc)
    from sqlalchemy.exc import IntegrityError

    async with hub.sessions() as session:
        agreement = (await session.execute(select(Agreement).limit(1))).scalar_one()
        agreement.invited_share_bp = 10001
        with pytest.raises(IntegrityError):
            await session.commit()


async def test_user_add_with_centers_and_password(hub: Any, demo_doc: dict[str, Any]) -> None:
    await load_network(hub, demo_doc)
    user_id = await add_user(
        hub,
        username="new_reader",
        role="reader",
        institution="NL-C01-K01",
        password="correct horse",
        centers=["NL-C01-K01-IMG", "NL-C01-K01-ECG"],
        title="主治医师",
    )
    async with hub.sessions() as session:
        user = await session.get(User, user_id)
        assert user is not None and user.password_hash and "correct horse" not in user.password_hash
        assert user.password_hash.startswith("scrypt$")
        bound = (await session.execute(select(func.count()).where(UserCenter.user_id == user_id))).scalar_one()
    assert bound == 2
    token = await issue_token(hub, "new_reader", "correct horse")
    assert len(str(token["token"])) >= 40
    for bad in ({"role": "pilot"}, {"institution": "NOPE"}, {"centers": ["NOPE"]}):
        args: dict[str, Any] = {
            "username": "x_user",
            "role": "reader",
            "institution": "NL-C01-K01",
            "password": "long enough",
            **bad,
        }
        with pytest.raises(Invalid):
            await add_user(hub, **args)
    with pytest.raises(Invalid, match="only readers and coordinators"):
        await add_user(
            hub,
            username="req",
            role="requester",
            institution="NL-C01-K01",
            password="long enough",
            centers=["NL-C01-K01-IMG"],
        )


async def _rows(engine: Any) -> dict[str, Any]:
    """Every row of every table (and on PostgreSQL where every sequence stands)."""
    found: dict[str, Any] = {}
    async with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            rows = (await conn.execute(select(table).order_by(*table.primary_key.columns))).all()
            found[table.name] = [tuple(row) for row in rows]
        if engine.dialect.name == "postgresql":
            query = "SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = current_schema()"
            found["sequences"] = sorted(tuple(row) for row in (await conn.execute(text(query))).all())
    return found


@pytest.mark.parametrize("kind", engine_params())
async def test_a_test_database_is_what_create_all_and_the_demo_load_make(kind: str, tmp_path: Any) -> None:
    """The suite's fresh databases are copies of per-process templates (tests/conftest.py): one taken after another
    test used it holds exactly what the demo load writes into the tables create_all just made, ids and sequences
    included; and an empty one is empty."""
    import uuid

    from telenet.app import make_hub
    from telenet.domain.sla import FixedClock
    from telenet.store.db import create_engine
    from tests.conftest import DEFAULT_NOW, POSTGRES_URL, _drop_database, _make_database, load_demo, template_settings

    used = await _make_database(kind, tmp_path / "used", migrate=False, demo=True)
    hub = make_hub(template_settings(tmp_path / "var"), used.engine, FixedClock(DEFAULT_NOW))
    await add_user(hub, username="x_used", role="requester", institution="NL-C01-K01-T01", password=None)
    await _drop_database(used)
    copy_ = await _make_database(kind, tmp_path / "copy", migrate=False, demo=True)
    empty = await _make_database(kind, tmp_path / "empty", migrate=False)
    schema = None
    if kind == "sqlite":
        reference = create_engine(f"sqlite+aiosqlite:///{tmp_path}/reference.db")
    else:
        assert POSTGRES_URL
        schema = "t_" + uuid.uuid4().hex[:16]
        reference = create_engine(POSTGRES_URL, schema=schema)
        async with reference.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        async with reference.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        await load_demo(reference, tmp_path / "var")
        copied, expected = await _rows(copy_.engine), await _rows(reference)
        assert [name for name in expected if copied[name] != expected[name]] == []
        assert len(copied["users"]) == len(expected["users"]) > 10
        nothing = await _rows(empty.engine)
        assert [name for name, rows in nothing.items() if rows and name != "sequences"] == []
        assert all(value is None for _, value in nothing.get("sequences", []))
    finally:
        if schema:
            async with reference.begin() as conn:
                await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await reference.dispose()
        await _drop_database(copy_)
        await _drop_database(empty)
