"""The registry over HTTP: authentication, scope per role, problem JSON, audit rows, OpenAPI."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from telenet.api.context import EXTRA
from telenet.store.models import AuditEntry, Token


async def problem_of(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    body: dict[str, Any] = await resp.json()
    assert body["type"] == f"urn:telenet:problem:{code}"
    assert body["status"] == status
    return body


async def test_healthz_is_public_and_reports_database(client: Any) -> None:
    resp = await client.get("/healthz")
    assert resp.status == 200
    body = await resp.json()
    assert body["database"] == "ok"
    assert body["version"]


async def test_token_and_401_cases(client: Any) -> None:
    await problem_of(await client.get("/api/v1/institutions"), 401, "missing-token")
    await problem_of(
        await client.get("/api/v1/institutions", headers={"Authorization": "Bearer nope"}), 401, "bad-token"
    )
    await problem_of(
        await client.post("/api/v1/auth/token", json={"username": "township_doc", "password": "x"}),
        401,
        "bad-credentials",
    )
    await problem_of(
        await client.post("/api/v1/auth/token", json={"username": "ghost", "password": "x"}),
        401,
        "bad-credentials",
    )
    body = await problem_of(
        await client.post("/api/v1/auth/token", json={"username": "township_doc"}), 422, "schema-violation"
    )
    assert any("password" in e["message"] for e in body["errors"])
    await problem_of(
        await client.post("/api/v1/auth/token", data="{not json", headers={"Content-Type": "application/json"}),
        422,
        "bad-json",
    )
    headers = await client.login("township_doc")
    resp = await client.get("/api/v1/institutions", headers=headers)
    assert resp.status == 200


async def test_token_is_stored_hashed_and_expires(client: Any) -> None:
    resp = await client.post("/api/v1/auth/token", json={"username": "township_doc", "password": "demo-password-1"})
    token = (await resp.json())["token"]
    async with client.hub.sessions() as session:
        hashes = (await session.execute(select(Token.token_hash))).scalars().all()
    assert token not in hashes and len(hashes) == 1
    headers = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/api/v1/centers", headers=headers)).status == 200
    from datetime import timedelta

    client.hub.clock.advance(timedelta(minutes=client.hub.options.token_ttl_minutes + 1))
    await problem_of(await client.get("/api/v1/centers", headers=headers), 401, "token-expired")


async def test_institution_directory_by_tier_and_scope(client: Any) -> None:
    headers = await client.login("township_doc")
    resp = await client.get("/api/v1/institutions?tier=county", headers=headers)
    items = (await resp.json())["items"]
    assert len(items) == 4 and {i["tier"] for i in items} == {"county"}
    assert all("ae_titles" not in i for i in items), "integration details are outside a township's scope"
    own = await (await client.get("/api/v1/institutions/NL-C01-K01-T01", headers=headers)).json()
    assert own["ae_titles"] == ["C01K01T01"] and own["path"] == [
        "NL-PROV",
        "NL-C01",
        "NL-C01-K01",
        "NL-C01-K01-T01",
    ]
    await problem_of(await client.get("/api/v1/institutions?tier=galaxy", headers=headers), 422, "bad-parameter")
    await problem_of(await client.get("/api/v1/institutions/NOPE", headers=headers), 404, "not-found")

    admin = await client.login("county_admin")
    subtree = await (await client.get("/api/v1/institutions?within=NL-C01-K01", headers=admin)).json()
    assert len(subtree["items"]) == 1 + 3 + 6
    assert all("ae_titles" in i for i in subtree["items"]), "a county admin sees its subtree's integration details"
    city = await (await client.get("/api/v1/institutions/NL-C01", headers=admin)).json()
    assert "ae_titles" not in city


async def test_centers_list(client: Any) -> None:
    headers = await client.login("county_reader")
    body = await (await client.get("/api/v1/centers?service=ecg", headers=headers)).json()
    codes = {c["code"] for c in body["items"]}
    assert "NL-C01-K01-ECG" in codes and "NL-C02-K02-ECG" not in codes
    assert all(c["service"] == "ecg" for c in body["items"])


async def test_audit_is_for_admins_in_their_subtree(client: Any) -> None:
    reader = await client.login("county_reader")
    await client.get("/api/v1/institutions/NL-C01-K01-T01", headers=reader)
    await problem_of(await client.get("/api/v1/audit", headers=reader), 403, "role")

    admin = await client.login("county_admin")
    await problem_of(await client.get("/api/v1/audit?institution=NL-C02", headers=admin), 403, "scope")
    body = await (await client.get("/api/v1/audit?action=institution.read", headers=admin)).json()
    mine = [e for e in body["items"] if e["object_id"] == "NL-C01-K01-T01"]
    assert mine and mine[0]["actor"] == "county_reader" and mine[0]["outcome"] == "ok"
    assert mine[0]["remote_addr"] == "127.0.0.1"

    province = await client.login("province_admin")
    body = await (await client.get("/api/v1/audit?action=audit.read", headers=province)).json()
    outcomes = {e["outcome"] for e in body["items"] if e["actor"] == "county_admin"}
    assert outcomes == {"ok", "scope"}, "a refused attempt is audited with its error code"


async def test_a_read_of_something_that_does_not_exist_is_audited_with_not_found(client: Any) -> None:
    """Every other read, per role and scope, is in tests/integration/surface_table.py."""
    headers = await client.login("township_doc")
    resp = await client.get("/api/v1/institutions/NOPE", headers=headers)
    assert resp.status == 404
    async with client.hub.sessions() as session:
        rows = (await session.execute(select(AuditEntry).where(AuditEntry.action == "institution.read"))).scalars()
        assert [(r.actor, r.object_id, r.outcome) for r in rows] == [("township_doc", "NOPE", "not-found")]


async def test_unknown_route_is_problem_json(client: Any) -> None:
    await problem_of(await client.get("/api/v1/nothing-here"), 404, "not-found")


async def test_openapi_describes_every_route(client: Any) -> None:
    doc = await (await client.get("/api/v1/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    described = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    served = set()
    for resource in client.app.router.resources():
        info = resource.get_info()
        path = info.get("path") or info.get("formatter") or info.get("prefix")
        for route in resource:
            if route.method != "HEAD":
                served.add((route.method, path))
    served -= client.app[EXTRA]["console_routes"]  # the console's pages are not API endpoints
    assert served == described
    token_op = doc["paths"]["/api/v1/auth/token"]["post"]
    ref = token_op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref.split("/")[-1] in doc["components"]["schemas"]
