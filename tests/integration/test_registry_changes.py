"""Records are never deleted: admins change institutions, centers, agreements and accounts through the API;
each change is a new version with its validity period (the history is kept), audited, and routing uses the
version in force at the time of the request, a scheduled one included, before the sweeper writes it into the
live row. Both engines."""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from telenet.domain.errors import Invalid
from telenet.services import requests
from telenet.services.auth import actor_for_username
from telenet.services.network import load_network
from telenet.services.registry_snapshot import RegistryCache
from telenet.services.sweeper import sweep_once
from telenet.store.db import read_session_factory
from telenet.store.models import AuditEntry, Center, Institution, User
from tests.factories import order

COUNTY_IMG = "NL-C01-K01-IMG"
AGREEMENTS = "/api/v1/networks/NET-NL-C01-K01/agreements"
AGREEMENT = f"{AGREEMENTS}/NL-C01-K01-T01"

# (path, body, history kind, history key, what the live record holds afterwards)
CHANGES = [
    (
        "/api/v1/centers/NL-C01-K01-IMG",
        {"capacity": 35, "sla_minutes": {"stat": 20, "urgent": 60, "routine": 180}, "reason": "增加一名医师"},
        "center",
        COUNTY_IMG,
        {"capacity": 35, "sla_minutes": {"stat": 20, "urgent": 60, "routine": 180}},
    ),
    (
        "/api/v1/centers/NL-C01-K01-IMG",
        {"opening_hours": [{"days": "mon-fri", "from": "08:00", "to": "18:00"}]},
        "center",
        COUNTY_IMG,
        {"opening_hours": [{"days": "mon-fri", "from": "08:00", "to": "18:00"}]},
    ),
    (
        "/api/v1/institutions/NL-C01-K01-T01",
        {"grade": "1B", "dicom_charset": "GBK", "hl7_destination": {"host": "10.1.2.3", "port": 2575}},
        "institution",
        "NL-C01-K01-T01",
        {"grade": "1B", "dicom_charset": "GBK", "hl7_host": "10.1.2.3", "hl7_port": 2575},
    ),
    (
        AGREEMENT,
        {"invited_share_bp": 6500, "services": ["imaging"]},
        "agreement",
        "NET-NL-C01-K01/NL-C01-K01-T01",
        {"invited_share_bp": 6500, "services": ["imaging"]},
    ),
    (
        "/api/v1/users/junior_reader",
        {"display_name": "赵晓雨（进修）", "centers": ["NL-C01-K01-IMG"]},
        "account",
        "junior_reader",
        {"display_name": "赵晓雨（进修）", "centers": ["NL-C01-K01-IMG"]},
    ),
]


async def history(client: Any, kind: str, key: str, user: str = "county_admin") -> list[dict[str, Any]]:
    resp = await client.get(
        "/api/v1/registry/history", params={"kind": kind, "key": key}, headers=await client.login(user)
    )
    assert resp.status == 200, await resp.text()
    items: list[dict[str, Any]] = (await resp.json())["items"]
    return items


async def test_a_change_is_a_new_version_and_the_history_is_kept(
    client: Any, clock: Any, demo_doc: dict[str, Any]
) -> None:
    admin = await client.login("county_admin")
    for path, body, kind, key, after in CHANGES:
        before = await history(client, kind, key)
        resp = await client.patch(path, json=body, headers=admin)
        assert resp.status == 200, await resp.text()
        view = await resp.json()
        assert (view["revision"], view["in_force"]) == (len(before) + 1 + (not before), True), path
        assert set(view["changed"]) == set(after)

        *older, previous, latest = await history(client, kind, key)
        assert [i["data"] for i in [*older, previous]][: len(before)] == [i["data"] for i in before], "kept as it was"
        assert older or previous["changed_by"] == "registry", "the first version is the record before any change"
        assert latest["changed_by"] == "county_admin" and latest["valid_to"] is None
        assert previous["valid_to"] == latest["valid_from"], "the old version ends when the new one begins"
        assert all(previous["data"][k] != v for k, v in after.items()), "the old version keeps the old values"
        assert {k: latest["data"][k] for k in after} == after

        again = await client.patch(path, json=body, headers=admin)
        assert (await again.json())["revision"] is None, "the same change twice is no new version"
        assert len(await history(client, kind, key)) == len(older) + 2

    async with client.hub.sessions() as session:
        audit = (
            (
                await session.execute(
                    select(AuditEntry)
                    .where(AuditEntry.actor == "county_admin", AuditEntry.action.like("%.change"))
                    .order_by(AuditEntry.id)
                )
            )
            .scalars()
            .all()
        )
    assert len(audit) == 2 * len(CHANGES) and {a.outcome for a in audit} == {"ok"}
    assert audit[0].detail["changed"] == CHANGES[0][4]
    async with client.hub.sessions() as session:
        center = (await session.execute(select(Center).where(Center.code == COUNTY_IMG))).scalar_one()
        reader = (await session.execute(select(User).where(User.username == "junior_reader"))).scalar_one()
    assert (center.capacity, center.opening_hours, reader.display_name) == (
        35,
        [{"days": "mon-fri", "from": "08:00", "to": "18:00"}],
        "赵晓雨（进修）",
    ), "the live rows hold the versions in force"

    reader = await client.login("county_reader")
    assert (await client.get("/api/v1/centers", headers=reader)).status == 200
    disabled = await client.patch("/api/v1/users/county_reader", json={"active": False}, headers=admin)
    assert (await disabled.json())["changed"] == ["active"]
    assert (await client.get("/api/v1/centers", headers=reader)).status == 401, (
        "disabled, never deleted: its token ends"
    )

    # A network file reload is a version too, and the API's next change starts from it.
    hub, path = client.hub, "/api/v1/centers/NL-C01-K01-IMG"
    doc = copy.deepcopy(demo_doc)
    idx = next(i for i, c in enumerate(doc["centers"]) if c["code"] == COUNTY_IMG)
    doc["centers"][idx]["capacity"] = 45
    await load_network(hub, doc)
    items = await history(client, "center", COUNTY_IMG)
    assert [(i["data"]["capacity"], i["changed_by"]) for i in items] == [
        (20, "registry"),
        (35, "county_admin"),
        (35, "county_admin"),
        (45, "network-file"),
    ]
    assert (await sweep_once(hub)).registry_changes_applied == 0, "the file's version is the live row's"
    assert (await client.patch(path, json={"note": "扩建"}, headers=admin)).status == 200
    async with hub.sessions() as session:
        center = (await session.execute(select(Center).where(Center.code == COUNTY_IMG))).scalar_one()
    assert (center.capacity, center.note) == (45, "扩建"), "the API change starts from what the file set"

    later = (clock.now() + timedelta(days=1)).isoformat()
    assert (await client.patch(path, json={"capacity": 25, "effective_from": later}, headers=admin)).status == 200
    doc["centers"][idx]["capacity"] = 50
    with pytest.raises(Invalid) as refused:
        await load_network(hub, doc)
    assert [d["location"] for d in refused.value.details] == [f"/centers/{idx}"]
    assert len(await history(client, "center", COUNTY_IMG)) == 6, "nothing of the refused load was written"


# (what is changed, how: PATCH path and body) -- each stops the county center from taking the township's CT.
ROUTING = [
    ("agreement ended", AGREEMENT, {"valid_to": "2026-03-01"}),
    (
        "center closed on weekdays",
        "/api/v1/centers/NL-C01-K01-IMG",
        {"opening_hours": [{"days": "sat", "from": "08:00", "to": "09:00"}]},
    ),
]


@pytest.mark.parametrize(("what", "path", "body"), ROUTING, ids=[r[0] for r in ROUTING])
async def test_routing_uses_the_version_in_force(
    client: Any, clock: Any, what: str, path: str, body: dict[str, Any]
) -> None:
    hub = client.hub
    clinic = await actor_for_username(hub, "township_doc")
    other_process = RegistryCache(read_session_factory(hub.engine), check_seconds=0)
    seen = (await other_process.get()).version

    async def routed(serial: int) -> str:
        view = await requests.submit(hub, clinic, order(modality="CT", patient_id=f"H{serial}", serial=serial))
        return str(view["center"]["code"])

    assert await routed(1) == COUNTY_IMG
    at = clock.now() + timedelta(hours=1)
    resp = await client.patch(
        path, json={**body, "effective_from": at.isoformat()}, headers=await client.login("county_admin")
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["in_force"] is False
    assert (await other_process.get()).version > seen, "every process reloads its snapshot"
    assert await routed(2) == COUNTY_IMG, "scheduled, not yet in force"

    clock.advance(hours=2)
    assert await routed(3) != COUNTY_IMG, f"{what}: in force now, before the sweeper wrote it"
    assert (await sweep_once(hub)).registry_changes_applied == 1
    assert (await sweep_once(hub)).registry_changes_applied == 0, "applied once"
    assert await routed(4) != COUNTY_IMG
    async with hub.sessions() as session:
        center = (await session.execute(select(Center).where(Center.code == COUNTY_IMG))).scalar_one()
    if "opening_hours" in body:
        assert center.opening_hours == body["opening_hours"], "the live row follows"


# (who, method, path, body, status, problem code) -- nothing is written for any of them
REFUSED = [
    ("county_admin", "PATCH", "/api/v1/centers/NL-C01-K01-IMG", {"capacity": 0}, 422, None),
    ("county_admin", "PATCH", "/api/v1/centers/NL-C01-K01-IMG", {"colour": "red"}, 422, None),
    ("county_admin", "PATCH", "/api/v1/centers/NL-C01-K01-IMG", {}, 422, None),
    (
        "county_admin",
        "PATCH",
        "/api/v1/centers/NL-C01-K01-IMG",
        {"capacity": 30, "effective_from": "2026-03-01T00:00:00+08:00"},
        422,
        "effective-in-the-past",
    ),
    ("county_admin", "PATCH", "/api/v1/centers/NL-C01-K01-IMG", {"capacity": 30, "effective_from": "soon"}, 422, None),
    ("county_admin", "PATCH", AGREEMENT, {"valid_from": "2029-01-01"}, 422, "bad-dates"),
    ("county_admin", "PATCH", "/api/v1/institutions/NL-C01-K01-T01", {"tier": "city"}, 422, None),
    ("county_admin", "PATCH", "/api/v1/centers/NL-C01-IMG", {"capacity": 30}, 403, "scope"),
    ("county_admin", "PATCH", "/api/v1/users/city_reader", {"title": "主任医师"}, 403, "scope"),
    ("county_admin", "PATCH", "/api/v1/users/county_reader", {"centers": ["NL-C01-IMG"]}, 403, "scope"),
    ("county_admin", "PATCH", "/api/v1/users/county_admin", {"role": "reader"}, 403, "self"),
    ("county_admin", "PATCH", "/api/v1/users/county_reader", {"centers": ["NL-NOPE"]}, 422, "unknown-center"),
    ("county_coord", "PATCH", "/api/v1/centers/NL-C01-K01-IMG", {"capacity": 30}, 403, None),
    ("county_reader", "PATCH", "/api/v1/users/county_reader", {"role": "admin"}, 403, None),
    ("county_admin", "PATCH", "/api/v1/centers/NL-NOPE", {"capacity": 30}, 404, None),
    ("county_admin", "PATCH", f"{AGREEMENTS}/NL-C02-K01", {"services": ["ecg"]}, 422, "not-a-member"),
    (
        "county_admin",
        "POST",
        "/api/v1/networks/NET-NL-C01-K01/agreements",
        {"member": "NL-C01-K01-T01", "valid_from": "2026-01-01", "valid_to": "2026-12-31", "services": ["ecg"],
         "invited_share_bp": 5000},
        409,
        "agreement-exists",
    ),
    ("county_admin", "GET", "/api/v1/registry/history?kind=network&key=X", None, 422, "bad-parameter"),
]  # fmt: skip


async def test_bad_changes_are_refused_and_a_later_change_waits_for_the_scheduled_one(client: Any, clock: Any) -> None:
    for who, method, path, body, status, code in REFUSED:
        resp = await client.request(method, path, json=body, headers=await client.login(who))
        assert resp.status == status, (who, path, body, await resp.text())
        assert resp.content_type == "application/problem+json", path
        if code is not None:
            assert (await resp.json())["type"] == f"urn:telenet:problem:{code}", (path, await resp.text())
    async with client.hub.sessions() as session:
        center = (await session.execute(select(Center).where(Center.code == COUNTY_IMG))).scalar_one()
        inst = (await session.execute(select(Institution).where(Institution.code == "NL-C01-K01-T01"))).scalar_one()
        admin = (await session.execute(select(User).where(User.username == "county_admin"))).scalar_one()
    assert (center.capacity, inst.tier, admin.role) == (20, "township", "admin")
    assert await history(client, "center", COUNTY_IMG) == []

    admin = await client.login("county_admin")
    path = "/api/v1/networks/NET-NL-C01-K01/agreements"
    new = {
        "member": "NL-C01-K01-T01-V01",
        "valid_from": "2026-03-01",
        "valid_to": "2027-02-28",
        "services": ["ecg"],
        "invited_share_bp": 5000,
    }
    assert (await client.post(path, json=new, headers=admin)).status == 409, "it has one: PATCH it"
    ended = await client.patch(f"{path}/NL-C01-K01-T01-V01", json={"valid_to": "2026-03-01"}, headers=admin)
    assert ended.status == 200
    items = await history(client, "agreement", "NET-NL-C01-K01/NL-C01-K01-T01-V01")
    assert [i["data"]["valid_to"] for i in items] == ["2028-12-31", "2026-03-01"]

    path = "/api/v1/centers/NL-C01-K01-IMG"
    later = (clock.now() + timedelta(days=7)).isoformat()
    assert (await client.patch(path, json={"capacity": 25, "effective_from": later}, headers=admin)).status == 200
    refused = await client.patch(path, json={"capacity": 30}, headers=admin)
    assert refused.status == 409 and (await refused.json())["type"] == "urn:telenet:problem:change-scheduled"
    after = (clock.now() + timedelta(days=8)).isoformat()
    assert (await client.patch(path, json={"note": "扩建", "effective_from": after}, headers=admin)).status == 200
    items = await history(client, "center", COUNTY_IMG)
    assert [(i["data"]["capacity"], i["data"]["note"] == "扩建") for i in items] == [
        (20, False),
        (25, False),
        (25, True),
    ]
    assert [i["valid_to"] for i in items] == [later, after, None]
