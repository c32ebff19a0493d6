"""Bounded fuzzing of the REST bodies: mutated order bodies (bytes flipped, cut, nested, numbers past 64 bits,
wrong types, other media types) never get a 5xx, and only the 201s leave rows."""

from __future__ import annotations

import json
import random
from typing import Any

from sqlalchemy import func, select

from telenet.store.models import Request
from tests.factories import order

CASES = 300


def mutate(rng: random.Random, base: dict[str, Any]) -> tuple[bytes, str]:
    body = json.loads(json.dumps(base))
    choice = rng.randrange(8)
    if choice == 0:  # flip bytes
        raw = bytearray(json.dumps(body, ensure_ascii=False).encode())
        for _ in range(rng.randint(1, 8)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return bytes(raw), "application/json"
    if choice == 1:  # cut
        raw = json.dumps(body).encode()
        return raw[: rng.randrange(len(raw))], "application/json"
    if choice == 2:  # nest
        depth = rng.choice([10, 31, 33, 500, 5000])
        return ("[" * depth + "1" + "]" * depth).encode(), "application/json"
    if choice == 3:  # a field with a value of another kind
        key = rng.choice(list(body))
        body[key] = rng.choice([None, 2**80, -(2**70), 1.5e308, "", "x" * 5000, [], {}, True, "张" * 300])
    elif choice == 4:  # a nested field
        patient = body.setdefault("patient", {})
        patient[rng.choice(["id", "name", "sex", "birth_date", "national_id", "extra"])] = rng.choice(
            [None, 2**64, "", "1980-13-45", "\u0000", "X" * 300, {"a": 1}, ["b"]]
        )
    elif choice == 5:  # drop a field
        body.pop(rng.choice(list(body)), None)
    elif choice == 6:  # another media type
        return json.dumps(body).encode(), rng.choice(["text/plain", "application/x-www-form-urlencoded", ""])
    return json.dumps(body, ensure_ascii=False).encode(), "application/json"


async def test_mutated_order_bodies_never_get_a_5xx_nor_leave_partial_rows(client: Any) -> None:
    rng = random.Random(14)
    headers = await client.login("township_doc")
    created = 0
    statuses: dict[int, int] = {}
    for i in range(CASES):
        raw, media = mutate(rng, order(patient_id=f"F{i}"))
        resp = await client.post("/api/v1/requests", data=raw, headers={**headers, "Content-Type": media})
        statuses[resp.status] = statuses.get(resp.status, 0) + 1
        assert resp.status < 500, (raw[:200], await resp.text())
        if resp.status == 201:
            created += 1
        else:
            assert resp.content_type == "application/problem+json", raw[:200]
    async with client.hub.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Request)) == created
    assert len(statuses) >= 3, statuses  # the mutations reached several outcomes, not one wall
