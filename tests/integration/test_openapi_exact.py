"""What the REST fuzzing found, pinned one by one: ids past 64 bits, times that do not fit UTC, a query value
the server ignored, and path parameters the document did not declare."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from telenet.store.models import Request
from tests.factories import order

pytestmark = pytest.mark.parametrize("database", ["sqlite"], indirect=True)


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/api/v1/attachments/99999999999999999999"),
        ("POST", "/api/v1/patients/merges/99999999999999999999/revert"),
    ],
)
async def test_an_id_past_64_bits_is_a_404_not_a_500(client: Any, method: str, path: str) -> None:
    """These two read the id with int() alone: SQLite cannot bind it (OverflowError, a 500)."""
    resp = await client.request(method, path, headers=await client.login("province_admin"))
    assert resp.status == 404, await resp.text()
    assert resp.content_type == "application/problem+json"


@pytest.mark.parametrize("job_id,status", [("9223372036854775807", 404), ("99999999999999999999", 404), ("x1", 422)])
async def test_a_replay_of_any_64_bit_job_id_is_looked_up_as_the_document_says(
    client: Any, job_id: str, status: int
) -> None:
    """Found by the full fuzzing: the replay route read its id by hand and refused 2**63-1 (which the document
    allows) as not a number; it reads it as every numeric path id is read."""
    resp = await client.post(f"/api/v1/forwarding/{job_id}/replay", headers=await client.login("county_coord"))
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/settlements?period=0001-01",
        "/api/v1/fees?from=0001-01-01",
        "/api/v1/fees?to=9999-12-31T23:00:00-05:00",
        "/api/v1/stats/assessment?from=0001-01-01T00:00:00%2B08:00",
        "/api/v1/audit?since=0001-01-01T00:00:00%2B01:00",
        "/api/v1/fee-schedule?on=0001-01-01",
    ],
)
async def test_a_time_outside_1900_to_9998_is_a_422_not_an_overflow(client: Any, path: str) -> None:
    """Year 1 at +08:00 is before datetime.min in UTC: binding it raised OverflowError (a 500)."""
    resp = await client.get(path, headers=await client.login("province_admin"))
    assert resp.status == 422, await resp.text()
    assert (await resp.json())["type"] in ("urn:telenet:problem:bad-parameter", "urn:telenet:problem:invalid")


async def test_an_unknown_center_service_is_refused_not_ignored(client: Any) -> None:
    headers = await client.login("township_doc")
    assert (await client.get("/api/v1/centers?service=ecg", headers=headers)).status == 200
    resp = await client.get("/api/v1/centers?service=dentistry", headers=headers)
    assert resp.status == 422, await resp.text()


async def test_the_document_types_every_parameter_the_handlers_read(client: Any) -> None:
    document = await (await client.get("/api/v1/openapi.json")).json()
    ecg = document["paths"]["/api/v1/ecg/{uid}.svg"]["get"]["parameters"]
    assert [p["name"] for p in ecg] == ["uid"] and ecg[0]["schema"]["pattern"]  # was undeclared: a schema error
    requests = {p["name"]: p["schema"] for p in document["paths"]["/api/v1/requests"]["get"]["parameters"]}
    assert requests["limit"] == {"type": "integer", "minimum": 1, "maximum": 500}
    assert "enum" in requests["state"] and "enum" in requests["kind"]
    request_id = document["paths"]["/api/v1/requests/{id}"]["get"]["parameters"][0]["schema"]
    assert request_id == {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
    settlement = {p["name"]: p for p in document["paths"]["/api/v1/settlements"]["get"]["parameters"]}
    assert settlement["period"]["required"] is True and "x-required" not in settlement["period"]["schema"]


@pytest.mark.parametrize("field", ["consent", "scheduled_at"])
async def test_an_order_time_outside_1900_to_9998_is_a_422_bad_time(client: Any, field: str) -> None:
    """``0001-01-01T00:00:00+08:00`` passed the format check and overflowed when stored as UTC."""
    body = order("consultation", modality=None, subspecialty="cardiology")
    if field == "consent":
        body["consent"]["given_at"] = "0001-01-01T00:00:00+08:00"
    else:
        body["scheduled_at"] = "0001-01-01T00:00:00+08:00"
    resp = await client.post("/api/v1/requests", json=body, headers=await client.login("township_doc"))
    assert resp.status == 422, await resp.text()
    assert (await resp.json())["type"] == "urn:telenet:problem:bad-time"
    async with client.hub.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Request)) == 0


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/fee-schedule?on=20260302",
        "/api/v1/fee-schedule?on=",
        "/api/v1/audit?since=2026-03-02%2010:00:00%2B08:00",
        "/api/v1/fees?from=2026-03-02T10:00%2B08:00",
    ],
)
async def test_a_time_fromisoformat_reads_but_the_document_does_not_allow_is_refused(client: Any, path: str) -> None:
    """Found by the negative fuzzing: ``20260302`` or a space for T parsed and were answered 200, though the
    document says RFC 3339."""
    resp = await client.get(path, headers=await client.login("province_admin"))
    assert resp.status == 422, await resp.text()
    assert (await resp.json())["type"] == "urn:telenet:problem:bad-parameter"


@pytest.mark.parametrize(
    "path",
    ["/api/v1/hl7/outbox?after_id=", "/api/v1/hl7/dead-letters?before_id=", "/api/v1/requests?before_id="],
)
async def test_an_empty_page_id_is_refused_not_read_as_the_first_page(client: Any, path: str) -> None:
    """Found by the negative fuzzing: ``after_id=`` (not an integer) was taken for no parameter at all."""
    resp = await client.get(path, headers=await client.login("province_admin"))
    assert resp.status == 422, await resp.text()
