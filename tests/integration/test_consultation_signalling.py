"""The consultation session's signalling relay over a real WebSocket: who may join, presence, signals to
one peer of the same session only, bad messages answered with an error, ICE servers from the settings."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from telenet.api.signalling import ice_servers
from tests.browser.test_consultation_call import consultation, token_of


async def join(client: Any, user: str, rid: int) -> tuple[Any, dict[str, Any]]:
    ws = await client.ws_connect(f"/api/v1/consultations/{rid}/ws", headers=await client.login(user))
    welcome = await ws.receive_json(timeout=5)
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


async def test_presence_and_signals_between_the_participants_of_one_session(client: Any) -> None:
    rid = await consultation(client)
    a, welcome_a = await join(client, "township_doc", rid)
    assert welcome_a["peers"] == [] and welcome_a["ice_servers"] == []
    b, welcome_b = await join(client, "city_reader", rid)
    assert [p["username"] for p in welcome_b["peers"]] == ["township_doc"]
    joined = await a.receive_json(timeout=5)
    assert (joined["type"], joined["event"], joined["peer"]["peer_id"]) == ("presence", "joined", welcome_b["peer_id"])

    offer = {"description": {"type": "offer", "sdp": "v=0 ..."}}
    await b.send_json({"type": "signal", "to": welcome_a["peer_id"], "data": offer})
    relayed = await a.receive_json(timeout=5)
    assert relayed == {"type": "signal", "from": welcome_b["peer_id"], "data": offer}

    bad = [
        ("not json", "messages are JSON objects"),
        ('{"type": "chat"}', "send {"),
        ('{"type": "signal", "to": "nobody#1", "data": {}}', "no peer"),
    ]
    for raw, detail in bad:
        await b.send_str(raw)
        answer = await b.receive_json(timeout=5)
        assert answer["type"] == "error" and detail in answer["detail"], raw

    # another consultation's peer is not reachable from this one
    other = await consultation(client)
    c, _ = await join(client, "township_doc", other)
    await c.send_json({"type": "signal", "to": welcome_b["peer_id"], "data": offer})
    assert "no peer" in (await c.receive_json(timeout=5))["detail"]

    await b.close()
    left = await a.receive_json(timeout=5)
    assert (left["event"], left["peer"]["peer_id"]) == ("left", welcome_b["peer_id"])
    await a.close()
    await c.close()


@pytest.mark.parametrize(("user", "status"), [("township_doc3", 403), ("county_reader", 403)])
async def test_outsiders_cannot_join(client: Any, user: str, status: int) -> None:
    rid = await consultation(client)
    headers = await client.login(user)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(f"/api/v1/consultations/{rid}/ws", headers=headers)
    assert refused.value.status == status
    # A page authenticating with its first message is refused too: the socket closes with the reason.
    ws = await client.ws_connect(f"/api/v1/consultations/{rid}/ws")
    await ws.send_json({"action": "auth", "token": token_of(headers)})
    assert (await ws.receive_json(timeout=5))["type"] == "authenticated"
    closed = await ws.receive(timeout=5)
    assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 4403 and "scope" in closed.extra


async def test_a_token_in_the_url_is_refused_and_the_first_message_authenticates(client: Any) -> None:
    rid = await consultation(client)
    token = token_of(await client.login("township_doc"))
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(f"/api/v1/consultations/{rid}/ws?token={token}")
    assert refused.value.status == 422, "a credential in the URL is refused, never read"
    ws = await client.ws_connect(f"/api/v1/consultations/{rid}/ws")
    await ws.send_json({"action": "auth", "token": token})
    assert (await ws.receive_json(timeout=5))["type"] == "authenticated"
    welcome = await ws.receive_json(timeout=5)
    assert welcome["type"] == "welcome" and welcome["request_id"] == rid
    await ws.close()


async def test_a_read_request_has_no_live_session(client: Any) -> None:
    from tests.integration.test_requests_api import queued_imaging

    view = await queued_imaging(client)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(f"/api/v1/consultations/{view['id']}/ws", headers=await client.login("township_doc"))
    assert refused.value.status == 422


ICE = [
    ("", []),
    ("stun:stun.example.cn:3478", [{"urls": "stun:stun.example.cn:3478"}]),
    (
        "stun:10.0.0.1:3478, turn:hub:s%40cret@10.0.0.1:3478",
        [
            {"urls": "stun:10.0.0.1:3478"},
            {"urls": "turn:10.0.0.1:3478", "username": "hub", "credential": "s@cret"},
        ],
    ),
]


@pytest.mark.parametrize(("setting", "servers"), ICE)
def test_ice_servers_from_the_setting(setting: str, servers: list[dict[str, str]]) -> None:
    assert ice_servers(setting) == servers


def test_a_bad_ice_server_is_refused() -> None:
    with pytest.raises(ValueError, match="stun:host:port"):
        ice_servers("http://example.cn")
