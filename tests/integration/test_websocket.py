"""The live channel with the `websockets` library as client (a second implementation against aiohttp)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
import websockets.exceptions  # not imported by "import websockets" (17): used before any connect

from telenet.api.ws import BROKER
from telenet.schemas import validate
from telenet.services import queue, reports, requests
from telenet.services.auth import actor_for_username
from tests.factories import order

FINAL = {"findings": "窦性心律，心率72次/分。", "impression": "正常心电图。", "final": True}


def ws_url(client: Any) -> str:
    return str(client.make_url("/api/v1/ws")).replace("http://", "ws://")


def live_ws(client: Any, token: str) -> Any:
    """A live-channel connection authenticated by the Authorization header (non-browser clients)."""
    return websockets.connect(ws_url(client), additional_headers={"Authorization": f"Bearer {token}"})


async def token_of(client: Any, user: str) -> str:
    return str((await client.login(user))["Authorization"].split()[1])


async def recv(ws: Any, wait: float = 5.0) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), wait))
    schema = {"event": "events/event", "subscribed": "events/subscribed", "error": "events/error"}[message["type"]]
    validate(schema, message)
    return message


async def recv_until(ws: Any, name: str, limit: int = 20) -> dict[str, Any]:
    for _ in range(limit):
        message = await recv(ws)
        if message.get("name") == name:
            return message
    raise AssertionError(f"no {name} event within {limit} messages")


async def subscribe(ws: Any, topics: list[str], since: int | None = None) -> dict[str, Any]:
    command: dict[str, Any] = {"action": "subscribe", "topics": topics}
    if since is not None:
        command["since"] = since
    validate("events/subscribe", command)
    await ws.send(json.dumps(command))
    return await recv(ws)


async def test_reader_sees_a_new_request_on_its_worklist(client: Any) -> None:
    headers = {"Authorization": f"Bearer {await token_of(client, 'county_reader')}"}
    async with websockets.connect(ws_url(client), additional_headers=headers) as ws:
        answer = await subscribe(ws, ["worklist:NL-C01-K01-ECG"])
        assert answer == {"type": "subscribed", "topics": ["worklist:NL-C01-K01-ECG"]}
        clinic = await actor_for_username(client.hub, "village_doc")
        view = await requests.submit(client.hub, clinic, order("ecg", modality="ECG", priority="stat"))
        event = await recv(ws)
        assert event["name"] == "request.ordered" and event["topic"] == "worklist:NL-C01-K01-ECG"
        assert event["data"]["request_id"] == view["id"] and "patient" not in json.dumps(event["data"])
        await requests.data_complete(client.hub, await actor_for_username(client.hub, "his_t01"), view["id"], "ecg")
        queued = await recv(ws)
        assert queued["name"] == "request.queued" and queued["data"]["state"] == "queued"
        assert queued["id"] > event["id"]


async def test_forbidden_topic_gets_an_error_and_nothing_of_it(client: Any) -> None:
    token = await token_of(client, "township_doc")
    async with live_ws(client, token) as ws:
        await ws.send(
            json.dumps(
                {
                    "action": "subscribe",
                    "topics": [
                        "requests:NL-C01-K01-T01",
                        "requests:NL-C02-K02-T01",
                        "worklist:NL-C01-K01-IMG",
                        "bogus",
                    ],
                }
            )
        )
        messages = [await recv(ws) for _ in range(4)]
        errors = {m["topic"]: m["code"] for m in messages if m["type"] == "error"}
        assert errors == {"requests:NL-C02-K02-T01": "scope", "worklist:NL-C01-K01-IMG": "scope", "bogus": "invalid"}
        assert messages[-1] == {"type": "subscribed", "topics": ["requests:NL-C01-K01-T01"]}
        other = await actor_for_username(client.hub, "township_doc3")
        await requests.submit(client.hub, other, order("ecg", modality="ECG"))
        mine = await requests.submit(client.hub, await actor_for_username(client.hub, "township_doc"), order())
        event = await recv(ws)
        assert event["data"]["request_id"] == mine["id"], "the other township's request never arrives"


async def test_clinic_sees_its_request_go_final(client: Any) -> None:
    hub = client.hub
    clinic = await actor_for_username(hub, "township_doc")
    view = await requests.submit(hub, clinic, order("ecg", modality="ECG"))
    async with live_ws(client, await token_of(client, "township_doc")) as ws:
        await subscribe(ws, [f"request:{view['id']}"])
        await requests.data_complete(hub, await actor_for_username(hub, "his_t01"), view["id"], "ecg")
        reader = await actor_for_username(hub, "county_reader")
        await queue.claim(hub, reader, view["id"])
        await reports.report(hub, reader, view["id"], FINAL)
        final = await recv_until(ws, "request.final")
        assert final["data"]["state"] == "final" and final["topic"] == f"request:{view['id']}"


async def test_dropped_client_replays_exactly_what_it_missed(client: Any) -> None:
    hub = client.hub
    clinic = await actor_for_username(hub, "township_doc")
    token = await token_of(client, "county_reader")
    async with live_ws(client, token) as ws:
        await subscribe(ws, ["worklist:NL-C01-K01-IMG"])
        first = await requests.submit(hub, clinic, order(patient_id="A"))
        last_seen = (await recv(ws))["id"]
    missed = [await requests.submit(hub, clinic, order(patient_id=f"M{i}")) for i in range(3)]
    his = await actor_for_username(hub, "his_t01")
    await requests.data_complete(hub, his, first["id"])
    async with live_ws(client, token) as ws:
        await subscribe(ws, ["worklist:NL-C01-K01-IMG"], since=last_seen)
        replayed = [await recv(ws) for _ in range(4)]
        assert [e["data"]["request_id"] for e in replayed] == [m["id"] for m in missed] + [first["id"]]
        assert [e["name"] for e in replayed] == ["request.ordered"] * 3 + ["request.queued"]
        ids = [e["id"] for e in replayed]
        assert ids == sorted(ids) and ids[0] > last_seen
        live = await requests.submit(hub, clinic, order(patient_id="L"))
        event = await recv(ws)
        assert event["data"]["request_id"] == live["id"] and event["id"] > ids[-1], "live after replay, no repeat"
        with pytest.raises(TimeoutError):
            await recv(ws, wait=0.3)


async def test_a_token_in_the_url_is_refused(client: Any) -> None:
    token = await token_of(client, "county_reader")
    with pytest.raises(websockets.exceptions.InvalidStatus) as caught:
        async with websockets.connect(ws_url(client) + f"?token={token}"):
            pass
    assert caught.value.response.status_code == 422
    assert b"credential-in-url" in caught.value.response.body


async def test_the_first_message_authenticates(client: Any) -> None:
    token = await token_of(client, "county_reader")
    async with websockets.connect(ws_url(client)) as ws:
        await ws.send(json.dumps({"action": "auth", "token": token}))
        hello = json.loads(await asyncio.wait_for(ws.recv(), 5))
        validate("events/authenticated", hello)
        assert hello == {"type": "authenticated", "username": "county_reader"}
        answer = await subscribe(ws, ["worklist:NL-C01-K01-IMG"])
        assert answer["topics"] == ["worklist:NL-C01-K01-IMG"]


@pytest.mark.parametrize(
    "first", [json.dumps({"action": "subscribe", "topics": ["worklist:NL-C01-K01-IMG"]}), "{}", "not json"]
)
async def test_without_authentication_the_connection_closes_with_4401(client: Any, first: str) -> None:
    async with websockets.connect(ws_url(client)) as ws:
        await ws.send(first)
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    assert "authenticate first" in closed.value.rcvd.reason


async def test_a_bad_token_in_the_first_message_closes_with_4401(client: Any) -> None:
    async with websockets.connect(ws_url(client)) as ws:
        await ws.send(json.dumps({"action": "auth", "token": "not-a-token"}))
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "bad-token")


async def test_malformed_commands_get_errors(client: Any) -> None:
    async with live_ws(client, await token_of(client, "county_reader")) as ws:
        await ws.send("not json")
        assert (await recv(ws))["type"] == "error"
        await ws.send(json.dumps({"action": "subscribe", "topics": ["worklist:NL-C01-K01-IMG"], "since": -1}))
        assert "since" in (await recv(ws))["detail"]


async def test_the_live_channel_stops_when_a_commit_wakes_it_as_the_app_stops(client: Any) -> None:
    """A commit wakes the broker in the loop turn in which the app's shutdown cancels it: it must still end
    (with ``asyncio.wait_for`` on Python 3.11 the cancellation was lost and the broker polled on forever)."""
    broker = client.server.app[BROKER]
    stopper = asyncio.create_task(broker.stop())  # runs first in the next turn: cancels the waiting broker
    broker.wake()  # ... and its wait's result arrives in that same turn
    try:
        done, _ = await asyncio.wait([stopper], timeout=10)
        assert done == {stopper}, "the broker ran on after it was cancelled"
        assert broker._task is not None and broker._task.cancelled()
    finally:
        stopper.cancel()


async def test_the_live_channel_sends_the_shared_frame_uncompressed(client: Any) -> None:
    """The client offers permessage-deflate (as browsers and the websockets library do); the hub declines it,
    so that every subscriber gets the bytes encoded once per topic, not a compression of its own."""
    async with live_ws(client, await token_of(client, "county_reader")) as ws:
        assert ws.request is not None and "permessage-deflate" in ws.request.headers.get("Sec-WebSocket-Extensions", "")
        assert ws.response is not None and ws.response.headers.get("Sec-WebSocket-Extensions") is None
        assert (await subscribe(ws, ["worklist:NL-C01-K01-IMG"]))["type"] == "subscribed"
