"""The durable forwarding queue against a destination that never answers, on both engines: retries with
backoff on the hub's clock, one alert per outage, dead-lettering after the limit; escalation forwards the
study to the new center's node."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.presentation import build_context
from sqlalchemy import select

from telenet.config import Settings
from telenet.services.network import load_network
from telenet.store.models import AuditEntry, Event
from tests.dicom_fixtures import TOWNSHIP_AE, dicom_settings, free_port, instance, wait_for
from tests.factories import order


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return dicom_settings(tmp_path, dicom_forward_max_attempts=3)


def with_nodes(doc: dict[str, Any], nodes: dict[str, int]) -> dict[str, Any]:
    patched = copy.deepcopy(doc)
    for center in patched["centers"]:
        if center["code"] in nodes:
            ae = "PACS" + center["code"].replace("NL-", "").replace("-", "")[:12]
            center["dicom_node"] = {"ae_title": ae, "host": "127.0.0.1", "port": nodes[center["code"]]}
    return patched


def send(port: int, ds: Any) -> None:
    ae = AE(ae_title=TOWNSHIP_AE)
    ae.requested_contexts = [build_context(str(ds.SOPClassUID))]
    assoc = ae.associate("127.0.0.1", port, ae_title="TELENET")
    assert assoc.is_established
    assert int(assoc.send_c_store(ds).Status) == 0
    assoc.release()


async def queued_study(client: Any, node: Any, clock: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/requests", json=order(modality="CT"), headers=await client.login("township_doc"))
    view: dict[str, Any] = await resp.json()
    await asyncio.to_thread(send, node.port, instance("CT_small.dcm", accession=view["accession_number"]))
    clock.advance(seconds=1)

    async def queued() -> bool:
        got = await client.get(f"/api/v1/requests/{view['id']}", headers=await client.login("township_doc"))
        return bool((await got.json())["state"] == "queued")

    await wait_for(queued)
    return view


async def jobs(client: Any, user: str = "county_coord", **query: str) -> dict[str, Any]:
    resp = await client.get("/api/v1/forwarding", params=query, headers=await client.login(user))
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def alerts(client: Any, name: str) -> int:
    async with client.hub.sessions() as session:
        return len((await session.execute(select(Event.id).where(Event.name == name))).all())


async def test_unreachable_destination_retries_then_dead_letters_with_one_alert(
    client: Any, node: Any, clock: Any, demo_doc: dict[str, Any]
) -> None:
    await load_network(client.hub, with_nodes(demo_doc, {"NL-C01-K01-IMG": free_port()}))  # nobody listens
    first = await queued_study(client, node, clock)
    second = await queued_study(client, node, clock)

    async def tried(attempts: int) -> bool:
        items = (await jobs(client))["items"]
        return len(items) == 2 and all(i["attempts"] >= attempts and i["state"] != "sending" for i in items)

    await wait_for(lambda: tried(1))
    listing = await jobs(client)
    assert {i["request_id"] for i in listing["items"]} == {first["id"], second["id"]}
    assert all(i["state"] == "pending" and i["last_error"] for i in listing["items"])
    assert [o["center"] for o in listing["outages"]] == ["NL-C01-K01-IMG"]
    for attempts in (2, 3):
        clock.advance(seconds=5)  # past the backoff on the hub's clock
        await wait_for(lambda attempts=attempts: tried(attempts))
    assert {i["state"] for i in (await jobs(client))["items"]} == {"dead"}
    assert len((await jobs(client, state="dead"))["items"]) == 2
    assert await alerts(client, "forwarding.destination_down") == 1, "one alert per outage, not per job"
    assert (await client.get("/api/v1/forwarding", headers=await client.login("township_doc"))).status == 403


async def test_escalation_forwards_to_the_new_center(
    client: Any, node: Any, clock: Any, demo_doc: dict[str, Any]
) -> None:
    await load_network(client.hub, with_nodes(demo_doc, {"NL-C01-K01-IMG": free_port(), "NL-C01-IMG": free_port()}))
    view = await queued_study(client, node, clock)
    resp = await client.post(
        f"/api/v1/requests/{view['id']}/escalate",
        json={"reason": "需要上级会诊"},
        headers=await client.login("county_reader"),
    )
    assert resp.status == 200, await resp.text()
    centers = {i["center"] for i in (await jobs(client, "province_admin"))["items"]}
    assert centers == {"NL-C01-K01-IMG", "NL-C01-IMG"}


async def test_a_coordinator_replays_a_dead_letter_and_the_pacs_receives_it(
    client: Any, node: Any, clock: Any, demo_doc: dict[str, Any]
) -> None:
    port = free_port()
    await load_network(client.hub, with_nodes(demo_doc, {"NL-C01-K01-IMG": port}))  # nobody listens yet
    view = await queued_study(client, node, clock)

    async def state() -> str:
        [item] = (await jobs(client))["items"]
        return str(item["state"])

    async def tried(attempts: int) -> bool:
        [item] = (await jobs(client))["items"]
        return bool(item["attempts"] >= attempts and item["state"] != "sending")

    for attempts in (1, 2, 3):  # the attempt limit (dicom_forward_max_attempts=3), each past its backoff
        await wait_for(lambda attempts=attempts: tried(attempts))
        clock.advance(seconds=30)
    assert await state() == "dead"
    [dead] = (await jobs(client, state="dead"))["items"]
    assert dead["request_id"] == view["id"] and dead["attempts"] == 3

    received: list[str] = []
    pacs = AE(ae_title="PACSC01K01IMG")
    pacs.supported_contexts = StoragePresentationContexts

    def on_store(event: Any) -> int:
        received.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    server = pacs.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        url = f"/api/v1/forwarding/{dead['id']}/replay"
        assert (await client.post(url, headers=await client.login("city_coord"))).status == 403, "another center's"
        assert (await client.post(url, headers=await client.login("township_doc"))).status == 403
        resp = await client.post(url, headers=await client.login("county_coord"))
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["state"] == "pending"
        again = await client.post(url, headers=await client.login("county_coord"))
        assert again.status == 409, "only a dead letter is replayed"
        await wait_for(lambda: _is(state, "done"))
        assert len(received) == 1
    finally:
        server.shutdown()
    async with client.hub.sessions() as session:
        audit = (
            (await session.execute(select(AuditEntry).where(AuditEntry.action == "dicom.forward.replay")))
            .scalars()
            .all()
        )
    # Refusals are written on their own (after the rollback), so ids need not follow the order of the calls.
    assert sorted((a.actor, a.outcome) for a in audit) == [
        ("city_coord", "scope"),
        ("county_coord", "ok"),
        ("county_coord", "state"),
    ]
    [replayed] = [a for a in audit if a.outcome == "ok"]
    assert replayed.detail["attempts"] == 3 and replayed.detail["last_error"]


async def _is(state: Any, wanted: str) -> bool:
    return bool(await state() == wanted)
