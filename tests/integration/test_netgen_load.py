"""A generated network loads on both engines; a second load changes nothing; loading a changed file over it
leaves exactly what loading the changed file into an empty database leaves (the bulk upsert is exact)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import aliased

from telenet.config import Settings
from telenet.domain.registry import check_network
from telenet.domain.sla import FixedClock
from telenet.netgen import generate_network
from telenet.schemas import schema_errors
from telenet.services.network import load_network
from telenet.services.network_document import network_schema_errors
from telenet.store.models import (
    Agreement,
    Center,
    Institution,
    InstitutionAETitle,
    Network,
    NetworkMember,
    RoutingRule,
    User,
    UserCenter,
)
from tests.conftest import engine_params

SHAPE = {"cities": 2, "counties_per_city": 2, "townships_per_county": 3, "villages_per_township": 2}


def generated(seed: int = 21) -> dict[str, Any]:
    return generate_network(**SHAPE, seed=seed)


async def snapshot(hub: Any) -> dict[str, set[tuple[Any, ...]]]:
    """The registry as sets of tuples keyed by codes, not ids, so two databases can be compared."""
    parent = aliased(Institution)
    lead = aliased(Institution)
    member = aliased(Institution)
    queries = {
        "institutions": select(
            Institution.code,
            Institution.name,
            Institution.tier,
            parent.code,
            Institution.path,
            Institution.kind,
            Institution.grade,
            Institution.hl7_facility,
            Institution.hl7_host,
            Institution.hl7_port,
        ).outerjoin(parent, Institution.parent_id == parent.id),
        "ae_titles": select(InstitutionAETitle.ae_title, Institution.code).join(Institution),
        "networks": select(Network.code, Network.name, lead.code).join(lead, Network.lead_id == lead.id),
        "members": select(Network.code, Institution.code)
        .select_from(NetworkMember)
        .join(Network)
        .join(Institution, NetworkMember.institution_id == Institution.id),
        "agreements": select(
            Network.code,
            member.code,
            lead.code,
            Agreement.valid_from,
            Agreement.valid_to,
            Agreement.invited_share_bp,
        )
        .select_from(Agreement)
        .join(Network)
        .join(member, Agreement.member_id == member.id)
        .join(lead, Agreement.lead_id == lead.id),
        "services": select(Network.code, member.code, Agreement.services)
        .select_from(Agreement)
        .join(Network)
        .join(member, Agreement.member_id == member.id),
        "rules": select(Network.code, RoutingRule.position, RoutingRule.kind, Center.code, RoutingRule.reason)
        .select_from(RoutingRule)
        .join(Network)
        .join(Center),
        "centers": select(Center.code, Center.name, Institution.code, Center.service, Center.capacity).join(
            Institution
        ),
        "users": select(User.username, User.role, User.display_name, User.title, Institution.code).join(Institution),
        "user_centers": select(User.username, Center.code).select_from(UserCenter).join(User).join(Center),
    }
    out: dict[str, set[tuple[Any, ...]]] = {}
    async with hub.sessions() as session:
        for name, query in queries.items():
            rows = (await session.execute(query)).all()
            out[name] = {tuple(str(v) if isinstance(v, list) else v for v in row) for row in rows}
    return out


@pytest.mark.parametrize("kind", engine_params())
async def test_generated_network_loads_and_reloads_unchanged(
    make_database: Any, kind: str, settings: Settings, clock: FixedClock
) -> None:
    from telenet.app import make_hub

    db = await make_database(kind)
    hub = make_hub(settings, db.engine, clock)
    doc = generated()
    first = await load_network(hub, doc)
    assert first.counts["institutions"]["created"] == len(doc["institutions"]) == 1 + 2 + 4 + 12 + 24
    assert first.counts["agreements"]["created"] == sum(len(n["agreements"]) for n in doc["networks"])
    assert first.counts["users"]["created"] == len(doc["users"])
    assert sorted(first.users_without_password) == sorted(u["username"] for u in doc["users"])
    before = await snapshot(hub)
    assert len(before["ae_titles"]) == len(doc["institutions"])
    assert len(before["user_centers"]) == sum(len(u["centers"]) for u in doc["users"])
    second = await load_network(hub, doc)
    assert second.changed == 0, second.counts
    assert await snapshot(hub) == before


def changed(doc: dict[str, Any]) -> dict[str, Any]:
    """A later version of the file: renames, a reparented township, AE titles swapped, an HL7 facility given
    up and taken by a new village, a member dropped, a share changed, rules moved, accounts rebound."""
    doc = copy.deepcopy(doc)
    inst = {i["code"]: i for i in doc["institutions"]}
    inst["GP-C01-K01"]["name"] = "改名县人民医院"
    inst["GP-C01-K01-T01"]["grade"] = "2C"
    inst["GP-C01-K01-T02"]["parent"] = "GP-C01-K02"  # its villages move with it
    a, b = inst["GP-C02-K01-T01"], inst["GP-C02-K01-T02"]
    a["ae_titles"], b["ae_titles"] = b["ae_titles"], [*a["ae_titles"], "EXTRA01"]
    given_up = inst["GP-C02-K02-T03"]["hl7_facility"]
    inst["GP-C02-K02-T03"]["hl7_facility"] = "RENAMED-FACILITY"
    new_village = {**copy.deepcopy(inst["GP-C02-K02-T03-V01"]), "code": "GP-C02-K02-T03-V09"}
    new_village.update(name="新建村卫生室", ae_titles=["C02K02T03V09"], hl7_facility=given_up)
    doc["institutions"].append(new_village)
    nets = {n["code"]: n for n in doc["networks"]}
    county_net = nets["NET-GP-C01-K01"]
    county_net["members"].remove("GP-C01-K01-T03-V02")
    county_net["agreements"] = [a for a in county_net["agreements"] if a["member"] != "GP-C01-K01-T03-V02"]
    county_net["agreements"][0]["invited_share_bp"] = 6500
    county_net["agreements"][1]["services"] = ["ecg"]
    nets["NET-GP-C01"]["rules"] = []
    nets["NET-GP-C02"]["rules"].append({"kind": "ecg", "center": "GP-C02-ECG", "reason": "心电优先到市"})
    for net in (nets["NET-GP-PROV"], nets["NET-GP-C02"], nets["NET-GP-C02-K02"]):
        net["members"].append(new_village["code"])
        net["agreements"].append({**net["agreements"][-1], "member": new_village["code"]})
    doc["centers"].append({**copy.deepcopy(doc["centers"][-1]), "code": "GP-C02-K02-CONS", "service": "consultation"})
    doc["centers"][-1]["modalities"] = []
    users = {u["username"]: u for u in doc["users"]}
    users["reader.c01-k01-img"]["centers"] = ["GP-C01-K01-ECG"]
    users["coord.c01-k01"]["centers"] = ["GP-C01-K01-IMG", "GP-C02-K02-CONS"]
    users["req.c01-k01-t01"]["display_name"] = "改名医生"
    doc["users"].append(
        {**users["req.c01-k01-t01"], "username": "req.new-village", "institution": "GP-C02-K02-T03-V09"}
    )
    assert schema_errors("network", doc) == [] and check_network(doc) == []
    return doc


@pytest.mark.parametrize("kind", engine_params())
async def test_loading_a_changed_file_equals_loading_it_fresh(
    make_database: Any, kind: str, settings: Settings, clock: FixedClock
) -> None:
    from telenet.app import make_hub

    original = generated()
    later = changed(original)
    upserted = make_hub(settings, (await make_database(kind)).engine, clock)
    await load_network(upserted, original)
    report = await load_network(upserted, later)
    assert report.counts["institutions"] == {"created": 1, "updated": 3, "unchanged": len(original["institutions"]) - 3}
    assert report.counts["agreements"]["updated"] == 2 and report.counts["users"]["created"] == 1
    fresh = make_hub(settings, (await make_database(kind)).engine, clock)
    await load_network(fresh, later)
    full, want = await snapshot(upserted), await snapshot(fresh)
    got = {table: set(rows) for table, rows in full.items()}
    # The agreement the changed file dropped is kept with its validity ended, never deleted.
    today = clock.now().date()
    for table in ("agreements", "services"):
        extra = got[table] - want[table]
        assert extra and {row[1] for row in extra} == {"GP-C01-K01-T03-V02"}, table
        got[table] -= extra
    ended = [row for row in full["agreements"] if row[1] == "GP-C01-K01-T03-V02"]
    assert any(row[4] < today for row in ended), "ended yesterday"
    for table in want:
        assert got[table] == want[table], table
    moved = {row[0]: row[4] for row in got["institutions"]}
    assert moved["GP-C01-K01-T02-V01"] == "/GP-PROV/GP-C01/GP-C01-K02/GP-C01-K01-T02/GP-C01-K01-T02-V01/"
    # Institutions that are not in a file keep their AE titles: a county's own file leaves the rest alone.
    partial = {"format": later["format"], "institutions": [later["institutions"][0]]}
    assert (await load_network(upserted, partial)).changed == 0
    assert await snapshot(upserted) == full


def test_the_inlined_validator_reports_what_the_schema_module_reports() -> None:
    doc = generated()
    assert network_schema_errors(doc) == schema_errors("network", doc) == []
    broken = copy.deepcopy(doc)
    broken["institutions"][0]["parent"] = "GP-C01"
    broken["institutions"][1]["tier"] = "galaxy"
    broken["institutions"][2]["ae_titles"] = ["lower case", "C01K01", "C01K01"]
    broken["institutions"][3]["hl7_destination"] = {"host": "x y", "port": 0}
    broken["institutions"][4].pop("grade")
    broken["networks"][0]["agreements"][0]["valid_to"] = "2028-02-30"
    broken["networks"][0]["agreements"][1]["services"] = []
    next(n for n in broken["networks"] if n.get("rules"))["rules"][0]["priority"] = "whenever"
    broken["networks"][1]["recognition_validity_days"] = {"imaging:DX": 0, "lab:X": 3}
    broken["centers"][0]["opening_hours"] = [{"days": "someday", "from": "25:00", "to": "24:00"}]
    broken["centers"][1]["sla_minutes"].pop("stat")
    broken["centers"][2]["service"] = "ecg"
    broken["centers"][2]["modalities"] = []
    broken["fee_schedule"][0]["price_fen"] = 1.5
    broken["users"][0]["username"] = "X"
    broken["users"][1]["centers"] = ["GP-PROV-IMG", "GP-PROV-IMG"]
    broken["extra"] = True
    errors = network_schema_errors(broken)
    assert errors == schema_errors("network", broken)
    assert len(errors) >= 16
