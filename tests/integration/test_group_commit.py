"""Group commit on both engines: concurrent writers share one transaction, each in its own savepoint, so a
failing member rolls back only itself (and is audited as refused) while the others commit."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import func, select

from telenet.domain.access import Actor
from telenet.domain.errors import Invalid
from telenet.services.auth import actor_for_username
from telenet.services.group_commit import in_group
from telenet.services.hub import Hub, use_case
from telenet.services.requests import upsert_patient
from telenet.store.models import AuditEntry, Patient

MEMBERS = 8
FAILING = 3


async def _register(hub: Hub, actor: Actor, n: int) -> int:
    async with use_case(hub, actor, "patient.upsert", "patient", f"G{n}") as uow:
        patient = await upsert_patient(hub, uow.session, actor.institution_id, {"id": f"G{n}", "name": f"病人{n}"})
        if n == FAILING:
            raise Invalid("refused after its write", code="bad-patient")
        return patient.id


async def test_concurrent_writers_share_a_transaction_and_fail_alone(demo_hub: Any) -> None:
    hub = demo_hub
    assert hub.group_commit is not None
    hub.group_commit.wait_ms = 20.0  # company arrives within one loop turn here; the bound only caps the wait
    actor = await actor_for_username(hub, "his_t01")
    before = len(hub.group_commit.sizes)
    results = await asyncio.gather(
        *(in_group(hub, _register, actor, n) for n in range(MEMBERS)), return_exceptions=True
    )
    failed = [n for n, r in enumerate(results) if isinstance(r, BaseException)]
    assert failed == [FAILING], results
    sizes = hub.group_commit.sizes[before:]
    assert sum(sizes) == MEMBERS and max(sizes) > 1, f"no group formed: {sizes}"
    async with hub.reader() as session:
        names = set((await session.execute(select(Patient.his_id).where(Patient.his_id.like("G%")))).scalars().all())
        refused = (
            await session.execute(
                select(func.count()).where(AuditEntry.object_id == f"G{FAILING}", AuditEntry.outcome == "bad-patient")
            )
        ).scalar_one()
    assert names == {f"G{n}" for n in range(MEMBERS) if n != FAILING}
    assert refused == 1, "the failed member's refusal is audited"


async def test_rest_orders_are_group_committed_and_answer_with_their_view(client: Any) -> None:
    """REST submits go through the group commit like the gateways' writers; each answers with its whole view
    (read after the shared commit), and a refused order (duplicate accession) fails alone."""
    from tests.factories import order

    group = client.hub.group_commit
    assert group is not None
    before = len(group.sizes)
    doc = await client.login("township_doc")
    first = order(patient_id="G1", serial=1)
    first["accession_number"] = "GRP0001"
    again = order(patient_id="G2", serial=2)
    again["accession_number"] = "GRP0001"
    other = order(patient_id="G3", serial=3)
    responses = await asyncio.gather(
        *(client.post("/api/v1/requests", json=body, headers=doc) for body in (first, again, other))
    )
    statuses = sorted(r.status for r in responses)
    assert statuses == [201, 201, 409], statuses
    views = [await r.json() for r in responses if r.status == 201]
    assert {v["patient"]["id"] for v in views} <= {"G1", "G2", "G3"} and len(views) == 2
    assert all(v["center"]["code"] and v["route"] for v in views), "the view is read whole after the commit"
    assert sum(group.sizes[before:]) >= 2, "the orders were members of group commits"


async def test_a_lone_writer_does_not_wait_for_company_and_a_crowd_still_shares(demo_hub: Any) -> None:
    """One writer after another (one association, one HL7 connection) commits at once; once writers come
    together they share a group again, and the group after a shared one waits for company."""
    hub = demo_hub
    group = hub.group_commit
    assert group is not None
    group.wait_ms = 20.0
    actor = await actor_for_username(hub, "his_t01")
    await in_group(hub, _register, actor, 100)  # after start-up (or a crowd) the first lone group waits
    unwaited, before = group.unwaited, len(group.sizes)
    for n in range(101, 106):
        await in_group(hub, _register, actor, n)
    assert group.sizes[before:] == [1] * 5 and group.unwaited == unwaited + 5, "lone writers waited for company"
    before = len(group.sizes)
    await asyncio.gather(*(in_group(hub, _register, actor, n) for n in range(110, 116)))
    assert max(group.sizes[before:]) > 1, f"no group formed: {group.sizes[before:]}"
    unwaited = group.unwaited
    await in_group(hub, _register, actor, 120)
    assert group.unwaited == unwaited, "the group after a shared one waits for company"
