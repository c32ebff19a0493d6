"""Bad input gets a clear answer, never a 500: JSON nesting and size, media type, ids beyond 64 bits,
integer bounds; the server secret, masked national ids in dead letters, parameters never in SQL errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from telenet.api.bodies import MAX_JSON_BYTES, json_depth_exceeds
from telenet.app import load_or_create_secret
from telenet.config import Settings
from telenet.domain.errors import Invalid
from telenet.domain.patients import mask_national_ids
from telenet.services.hl7_inbound import record_dead_letter
from telenet.store.models import HL7DeadLetter, User
from tests.factories import national_id, order


async def test_deeply_nested_json_is_422_not_500(client: Any) -> None:
    headers = await client.login("township_doc")
    for depth in (40, 100_000):
        body = "[" * depth + "]" * depth
        resp = await client.post("/api/v1/requests", data=body, headers={**headers, "Content-Type": "application/json"})
        assert resp.status == 422, depth
        assert (await resp.json())["type"] == "urn:telenet:problem:json-too-deep"


async def test_a_body_past_the_limit_is_413(client: Any) -> None:
    headers = await client.login("township_doc")
    body = json.dumps({"x": "a" * (MAX_JSON_BYTES + 10)})
    resp = await client.post("/api/v1/requests", data=body, headers={**headers, "Content-Type": "application/json"})
    assert resp.status == 413 and (await resp.json())["type"] == "urn:telenet:problem:payload-too-large"


async def test_a_wrong_content_type_is_415(client: Any) -> None:
    headers = await client.login("township_doc")
    resp = await client.post(
        "/api/v1/requests", data=json.dumps(order()), headers={**headers, "Content-Type": "text/plain"}
    )
    assert resp.status == 415 and (await resp.json())["type"] == "urn:telenet:problem:bad-content-type"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v1/requests/99999999999999999999999", 404),
        ("/api/v1/requests/9223372036854775808", 404),
        ("/api/v1/requests/0", 404),
        ("/api/v1/requests/-1", 422),
        ("/api/v1/requests/１２", 422),
        ("/api/v1/critical/18446744073709551616", 404),
    ],
)
async def test_ids_beyond_64_bits_are_404_or_422(client: Any, path: str, status: int) -> None:
    resp = await client.get(path, headers=await client.login("county_admin"))
    assert resp.status == status, await resp.text()


async def test_integers_beyond_64_bits_in_a_body_are_422(client: Any) -> None:
    headers = await client.login("county_coord")
    resp = await client.post(
        "/api/v1/reconciliation/1.2.3/link", json={"request_id": 2**70, "reason": "test"}, headers=headers
    )
    assert resp.status == 422, await resp.text()


def test_the_depth_check_skips_strings() -> None:
    assert not json_depth_exceeds(json.dumps({"a": "[[[[[[[[[[" * 10, "b": [[1]]}), 3)
    assert json_depth_exceeds('{"a": [[[1]]]}', 3)


@pytest.mark.parametrize("content", [b"", b"  \n", b"short"])
def test_an_empty_or_short_secret_file_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "secret.key"
    path.write_bytes(content)
    with pytest.raises(Invalid) as refused:
        load_or_create_secret(Settings(var_dir=str(tmp_path), secret_file=str(path)))
    assert refused.value.code == "bad-secret"
    assert load_or_create_secret(Settings(var_dir=str(tmp_path / "new"))) != b""


async def test_dead_letters_keep_the_national_id_masked(demo_hub: Any) -> None:
    nid = national_id(7)
    raw = f"MSH|^~\\&|HIS|X|||20260301||ORM^O01|C1|P|2.5\rPID|||{nid}^^^^NI||张^三\r".encode()
    letter_id = await record_dead_letter(demo_hub, raw=raw, reason=f"bad PID {nid}", peer="127.0.0.1")
    async with demo_hub.sessions() as session:
        letter = (await session.execute(select(HL7DeadLetter).where(HL7DeadLetter.id == letter_id))).scalar_one()
    assert nid.encode() not in letter.raw and nid[:17] not in letter.reason
    assert ("*" * 17 + nid[-1]).encode() in letter.raw
    wrong_check = nid[:17] + ("0" if nid[-1] != "0" else "1")
    assert mask_national_ids(f"|{wrong_check}|".encode()) == f"|{wrong_check}|".encode(), "not an id: kept"


async def test_sql_errors_never_carry_bound_parameters(demo_hub: Any, caplog: pytest.LogCaptureFixture) -> None:
    secret_name = "王秘密患者"
    caplog.set_level(logging.INFO)
    async with demo_hub.sessions() as session:
        user = (await session.execute(select(User).where(User.username == "township_doc"))).scalar_one()
        with pytest.raises(IntegrityError) as failed:
            await session.execute(
                text(
                    "INSERT INTO users (id, username, role, institution_id, active, created_at, display_name) "
                    "VALUES (:id, :u, 'reader', :i, true, CURRENT_TIMESTAMP, :n)"
                ),
                {"id": user.id, "u": "dup", "i": user.institution_id, "n": secret_name},
            )
    assert secret_name not in str(failed.value)
    assert secret_name not in caplog.text


async def test_sqlite_commits_are_durable_on_power_loss(make_database: Any) -> None:
    database = await make_database("sqlite")
    async with database.engine.connect() as conn:
        assert (await conn.execute(text("PRAGMA synchronous"))).scalar_one() == 2  # FULL
