"""Worklist pages held in memory (services.page_cache) on both engines: a page is built once and served again,
each read still scope-checked and audited; a change committed here shows on the next page at once, one
committed by another hub process as soon as this process's live channel reads its event, and the minutes
move with the clock."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import func, select

from telenet.api.ws import BROKER
from telenet.app import make_hub
from telenet.config import Settings
from telenet.services import queue
from telenet.services.auth import actor_for_username
from telenet.services.page_cache import PageCache
from telenet.store.models import AuditEntry, Event
from tests.integration.test_requests_api import act, queued_imaging

CENTER = "NL-C01-K01-IMG"
WORKLIST = f"/api/v1/centers/{CENTER}/worklist"


async def _page(client: Any, user: str = "county_reader") -> dict[str, Any]:
    resp = await client.get(WORKLIST, headers=await client.login(user))
    assert resp.status == 200, await resp.text()
    page: dict[str, Any] = await resp.json()
    return page


async def _audited(client: Any) -> int:
    async with client.hub.reader() as session:
        return int(
            (await session.execute(select(func.count()).where(AuditEntry.action == "worklist.read"))).scalar_one()
        )


async def _caught_up(client: Any) -> None:
    """Until the live channel has read every event committed so far (reading one makes pages go)."""
    broker = client.server.app[BROKER]
    async with client.hub.reader() as session:
        newest = (await session.execute(select(func.max(Event.id)))).scalar_one() or 0
    deadline = time.monotonic() + 20
    while broker.last_id < newest:
        assert time.monotonic() < deadline, "the live channel did not catch up"
        await asyncio.sleep(0.05)


def _item(page: dict[str, Any], request_id: int) -> dict[str, Any]:
    return next(i for i in page["items"] if i["request_id"] == request_id)


async def test_a_page_is_built_once_and_every_read_is_still_checked_and_audited(client: Any) -> None:
    view = await queued_imaging(client, patient_id="PC1")
    pages = client.hub.pages
    assert pages is not None
    await _caught_up(client)
    await _page(client)
    built, served, audited = pages.misses, pages.hits, await _audited(client)
    first, second = await _page(client), await _page(client)
    assert first == second and _item(first, view["id"])["state"] == "queued"
    assert (pages.misses, pages.hits) == (built, served + 2), "the page was built again"
    assert await _audited(client) == audited + 2, "a page from memory is a read like any other"
    metrics = await (await client.get("/metrics", headers=await client.login("province_admin"))).text()
    assert f'telenet_worklist_pages_total{{outcome="hit"}} {float(pages.hits)}' in metrics, metrics[-2000:]
    # The scope check is the worklist's own: a reader of another center is refused, page in memory or not.
    resp = await client.get(WORKLIST, headers=await client.login("city_reader"))
    assert resp.status == 403


async def test_a_change_committed_here_shows_on_the_next_page(client: Any) -> None:
    view = await queued_imaging(client, patient_id="PC2")
    assert _item(await _page(client), view["id"])["state"] == "queued"
    await act(client, "county_reader", view["id"], "claim")
    item = _item(await _page(client), view["id"])
    assert (item["state"], item["claimed_by"]) == ("claimed", "county_reader")


async def test_a_change_committed_by_another_hub_process_shows_once_the_live_channel_reads_it(
    client: Any, database: Any, settings: Settings, clock: Any
) -> None:
    view = await queued_imaging(client, patient_id="PC3")
    pages = client.hub.pages
    assert pages is not None
    pages.ttl_s = 600.0  # only the event can make this page go: not its age
    assert _item(await _page(client), view["id"])["state"] == "queued"
    other = make_hub(settings, database.engine, clock)  # another process: its own pages and commits
    await queue.claim(other, await actor_for_username(other, "county_reader"), view["id"])
    deadline = time.monotonic() + 20
    while _item(await _page(client), view["id"])["state"] != "claimed":
        assert time.monotonic() < deadline, "the other process's claim never showed"
        await asyncio.sleep(0.2)


async def test_the_minutes_move_with_the_clock(client: Any, clock: Any) -> None:
    view = await queued_imaging(client, patient_id="PC4")
    before = _item(await _page(client), view["id"])
    clock.advance(minutes=7)
    after = _item(await _page(client), view["id"])
    assert after["waiting_minutes"] == before["waiting_minutes"] + 7.0
    assert after["sla_remaining_minutes"] == before["sla_remaining_minutes"] - 7.0


def test_a_page_read_while_a_change_committed_is_not_kept() -> None:
    pages = PageCache()
    generation = pages.generation
    pages.clear()  # a change committed while the page was read
    pages.put("k", generation, {"items": []})
    assert pages.get("k") is None
    pages.put("k", pages.generation, {"items": []})
    assert pages.get("k") == {"items": []}
