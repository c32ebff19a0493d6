"""The registry snapshot: every hub process holds one, versioned in the database; a `network load` in one
process is seen by another at its next version check, and routing follows the new registry."""

from __future__ import annotations

import copy
from typing import Any

from telenet.app import make_hub
from telenet.services import requests
from telenet.services.auth import actor_for_username
from telenet.services.network import load_network
from tests.factories import order


async def test_a_load_in_one_process_reaches_the_snapshot_of_another(
    demo_hub: Any, demo_doc: dict[str, Any], database: Any, settings: Any, clock: Any
) -> None:
    other = make_hub(settings, database.engine, clock)  # a second hub process on the same database
    assert other.registry is not None
    other.registry.check_seconds = 0.0  # check the version on every use (the default bound is 1 s)
    before = await other.registry.get()
    assert before.center_by_code("NL-C01-K01-IMG") is not None
    doc = copy.deepcopy(demo_doc)
    for center in doc["centers"]:
        if center["code"] == "NL-C01-K01-IMG":
            center["capacity"] = 1  # one open request fills the township's county center
            center["name"] = "县影像中心（新）"
    await load_network(demo_hub, doc)
    after = await other.registry.get()
    assert after.version > before.version, "network load bumps the registry version"
    found = after.center_by_code("NL-C01-K01-IMG")
    assert found is not None and (found[0].capacity, found[0].name) == (1, "县影像中心（新）")
    loads = other.registry.loads
    assert (await other.registry.get()) is after and other.registry.loads == loads, "unchanged: no reload"
    actor = await actor_for_username(other, "township_doc")
    first = await requests.submit(other, actor, order("imaging", patient_id="S1"))
    assert first["center"]["code"] == "NL-C01-K01-IMG"
    second = await requests.submit(other, actor, order("imaging", patient_id="S2", serial=2))
    # The new capacity (1) from the snapshot against the load (1): the route says the center is full.
    assert "full (1/1)" in second["route"][0]["reason"], second["route"]
