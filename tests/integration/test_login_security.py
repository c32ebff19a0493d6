"""Login limiter and lockout, failed-login audit, logout, disabling accounts and password changes that end
tokens at once (the token cache included), the live channel closed on revocation, and /metrics access."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import websockets
import websockets.exceptions  # not imported by "import websockets" (17): used before any connect
from sqlalchemy import select

from telenet.api.context import EXTRA
from telenet.api.ws import BROKER
from telenet.config import Settings
from telenet.services import login
from telenet.services.auth import add_user
from telenet.store.models import AuditEntry
from tests.conftest import TEST_PASSWORD
from tests.integration.test_websocket import live_ws, subscribe, token_of

PER_ACCOUNT = 6
PER_ADDRESS = 12
LOCKOUT = 3


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        var_dir=str(tmp_path / "var"),
        secret="test-secret-not-for-production",
        dicom_enabled=False,
        hl7_enabled=False,
        login_attempts_per_account_minute=PER_ACCOUNT,
        login_attempts_per_address_minute=PER_ADDRESS,
        login_lockout_failures=LOCKOUT,
    )


async def attempt(client: Any, username: str, password: str) -> Any:
    return await client.post("/api/v1/auth/token", json={"username": username, "password": password})


async def login_audit(client: Any, username: str) -> list[tuple[str, str | None]]:
    async with client.hub.sessions() as session:
        rows = await session.execute(
            select(AuditEntry.outcome, AuditEntry.object_path)
            .where(AuditEntry.action == "auth.login", AuditEntry.object_id == username)
            .order_by(AuditEntry.id)
        )
        return [(r.outcome, r.object_path) for r in rows]


async def test_attempts_per_account_get_429_with_retry_after_and_are_audited(client: Any) -> None:
    for _ in range(PER_ACCOUNT):
        resp = await attempt(client, "nobody_here", "wrong-password")
        assert resp.status == 401
    resp = await attempt(client, "nobody_here", "wrong-password")
    assert resp.status == 429
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    body = await resp.json()
    assert body["type"] == "urn:telenet:problem:login-rate-limited" and body["status"] == 429
    assert await login_audit(client, "nobody_here") == [("bad-credentials", None)] * PER_ACCOUNT + [
        ("rate-limited", None)
    ]
    # The limit is per account: another account from the same address still gets in.
    assert (await attempt(client, "county_reader", TEST_PASSWORD)).status == 200


async def test_attempts_per_address_are_limited_across_accounts(client: Any) -> None:
    statuses = [(await attempt(client, f"guess{i:02d}", "wrong-password")).status for i in range(PER_ADDRESS + 1)]
    assert statuses == [401] * PER_ADDRESS + [429]


async def test_repeated_failures_lock_the_account_until_an_admin_unlocks_it(client: Any) -> None:
    for _ in range(LOCKOUT):
        assert (await attempt(client, "township_doc", "wrong-password")).status == 401
    locked = await attempt(client, "township_doc", TEST_PASSWORD)
    assert locked.status == 429 and (await locked.json())["type"] == "urn:telenet:problem:account-locked"
    assert int(locked.headers["Retry-After"]) > 60
    outcomes = await login_audit(client, "township_doc")
    assert [o for o, _ in outcomes] == ["bad-credentials"] * LOCKOUT + ["account-locked"]
    # Filed under the township, where its admins (and those above) see the attack.
    assert {p for _, p in outcomes} == {"/NL-PROV/NL-C01/NL-C01-K01/NL-C01-K01-T01/"}

    admin = await client.login("county_admin")
    unlocked = await client.post("/api/v1/users/township_doc/unlock", headers=admin)
    assert unlocked.status == 200, await unlocked.text()
    assert (await attempt(client, "township_doc", TEST_PASSWORD)).status == 200


async def test_an_admin_outside_the_subtree_cannot_unlock_or_disable(client: Any) -> None:
    county_admin = await client.login("county_admin")
    for action in ("unlock", "disable"):
        resp = await client.post(f"/api/v1/users/township_doc2/{action}", headers=county_admin)
        assert resp.status == 403, await resp.text()
    reader = await client.login("county_reader")
    assert (await client.post("/api/v1/users/township_doc/disable", headers=reader)).status == 403


async def test_the_password_hash_runs_off_the_event_loop(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    real = login.verify_password

    def recording(password: str, stored: str | None) -> bool:
        threads.append(threading.get_ident())
        return real(password, stored)

    monkeypatch.setattr(login, "verify_password", recording)
    assert (await attempt(client, "county_reader", TEST_PASSWORD)).status == 200
    assert (await attempt(client, "county_reader", "wrong-password")).status == 401
    assert len(threads) == 2 and threading.get_ident() not in threads


async def test_a_burst_of_logins_past_the_hash_queue_is_refused_before_hashing(
    client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One hash at a time and one login waiting: of four at once, two are refused at once as overload (503 with
    Retry-After, no password checked, not counted by the limiter), and the two others log in."""
    hashed: list[str] = []
    real = login.verify_password
    release = threading.Event()

    def slow(password: str, stored: str | None) -> bool:
        hashed.append(password)
        release.wait(10)  # the first hash holds its slot until the burst has arrived
        return real(password, stored)

    monkeypatch.setattr(login, "verify_password", slow)
    client.hub.password_checks = checks = login.PasswordChecks(slots=1, max_waiting=1)
    users = ["county_reader", "township_doc", "county_coord", "province_admin"]
    tasks = []
    for user in users:
        tasks.append(asyncio.create_task(attempt(client, user, TEST_PASSWORD)))
        for _ in range(200):  # each arrives before the next: the first hashing, the second waiting
            await asyncio.sleep(0.005)
            arrived = bool(hashed) if len(tasks) == 1 else checks.waiting + checks.refused >= len(tasks) - 1
            if arrived:
                break
    assert checks.refused == 2
    release.set()
    answers = await asyncio.gather(*tasks)
    statuses = [r.status for r in answers]
    assert statuses == [200, 200, 503, 503], statuses
    for refused in answers[2:]:
        body = await refused.json()
        assert body["type"] == "urn:telenet:problem:overloaded" and int(refused.headers["Retry-After"]) >= 1
    assert len(hashed) == 2
    assert await login_audit(client, "county_coord") == [], "a refused login checked no password"
    metrics = await (await client.get("/metrics", headers=await client.login("province_admin"))).text()
    assert "telenet_login_refused_overload_total 2.0" in metrics, metrics[-2000:]
    # Not counted as attempts: the limiter (6 a minute) lets the same accounts in as often as before.
    for _ in range(PER_ACCOUNT):
        assert (await attempt(client, "county_coord", TEST_PASSWORD)).status == 200


async def _works(client: Any, headers: dict[str, str]) -> int:
    resp = await client.get("/api/v1/requests", headers=headers)
    return int(resp.status)


async def test_logout_ends_the_token_although_it_is_cached(client: Any) -> None:
    headers = await client.login("county_reader")
    assert await _works(client, headers) == 200  # the actor is now in the token cache
    assert (await client.post("/api/v1/auth/logout", headers=headers)).status == 204
    resp = await client.get("/api/v1/requests", headers=headers)
    assert resp.status == 401 and (await resp.json())["type"] == "urn:telenet:problem:bad-token"


async def test_disabling_an_account_ends_its_tokens_at_once(client: Any) -> None:
    reader = await client.login("county_reader")
    assert await _works(client, reader) == 200
    admin = await client.login("county_admin")
    resp = await client.post("/api/v1/users/county_reader/disable", headers=admin)
    assert resp.status == 200 and (await resp.json())["revoked_tokens"] == 1
    assert await _works(client, reader) == 401
    assert (await attempt(client, "county_reader", TEST_PASSWORD)).status == 401
    assert (await client.post("/api/v1/users/county_reader/enable", headers=admin)).status == 200
    assert await _works(client, reader) == 401, "enabling does not bring old tokens back"
    assert (await attempt(client, "county_reader", TEST_PASSWORD)).status == 200
    async with client.hub.sessions() as session:
        actions = (
            await session.execute(
                select(AuditEntry.action).where(
                    AuditEntry.object_id == "county_reader", AuditEntry.actor == "county_admin"
                )
            )
        ).scalars()
        assert sorted(actions) == ["user.disable", "user.enable"]


async def test_changing_the_password_ends_every_token_of_the_account(client: Any) -> None:
    first = await client.login("county_reader")
    second = {
        "Authorization": f"Bearer {(await (await attempt(client, 'county_reader', TEST_PASSWORD)).json())['token']}"
    }
    assert await _works(client, first) == 200 and await _works(client, second) == 200
    wrong = await client.post(
        "/api/v1/auth/password",
        json={"current_password": "not-it-at-all", "new_password": "new-pass-9876"},
        headers=first,
    )
    assert wrong.status == 401 and await _works(client, first) == 200
    resp = await client.post(
        "/api/v1/auth/password",
        json={"current_password": TEST_PASSWORD, "new_password": "new-pass-9876"},
        headers=first,
    )
    assert resp.status == 200 and (await resp.json())["revoked_tokens"] == 2
    assert await _works(client, first) == 401 and await _works(client, second) == 401
    assert (await attempt(client, "county_reader", TEST_PASSWORD)).status == 401
    assert (await attempt(client, "county_reader", "new-pass-9876")).status == 200


async def test_an_admin_password_reset_ends_the_tokens(client: Any) -> None:
    reader = await client.login("county_reader")
    assert await _works(client, reader) == 200
    admin = await client.login("county_admin")
    short = await client.post("/api/v1/users/county_reader/password", json={"password": "short"}, headers=admin)
    assert short.status == 422 and await _works(client, reader) == 200
    resp = await client.post(
        "/api/v1/users/county_reader/password", json={"password": "reset-pass-1234"}, headers=admin
    )
    assert resp.status == 200 and await _works(client, reader) == 401


async def test_the_live_channel_closes_when_its_token_is_revoked(client: Any) -> None:
    client.app[EXTRA]["ws_recheck_seconds"] = 0.05
    token = await token_of(client, "county_reader")
    async with live_ws(client, token) as ws:
        await subscribe(ws, ["worklist:NL-C01-K01-IMG"])
        assert (await client.post("/api/v1/auth/logout", headers={"Authorization": f"Bearer {token}"})).status == 204
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    assert closed.value.rcvd.reason.startswith("bad-token")


async def _leave_the_imaging_center(client: Any, ws: Any) -> Any:
    """Move county_reader from the imaging center to the ECG center; the close frame the live channel then sends."""
    await add_user(
        client.hub,
        username="county_reader",
        role="reader",
        institution="NL-C01-K01",
        password=None,
        centers=["NL-C01-K01-ECG"],
    )
    with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd


async def test_the_live_channel_closes_when_the_reader_leaves_the_center(client: Any) -> None:
    client.app[EXTRA]["ws_recheck_seconds"] = 0.05
    token = await token_of(client, "county_reader")
    async with live_ws(client, token) as ws:
        await subscribe(ws, ["worklist:NL-C01-K01-IMG"])
        close = await _leave_the_imaging_center(client, ws)
    assert close.code == 4403
    assert "worklist:NL-C01-K01-IMG" in close.reason


async def _subscribe_audit(client: Any, topic: str) -> list[str]:
    async with client.hub.sessions() as session:
        rows = await session.execute(
            select(AuditEntry.outcome)
            .where(AuditEntry.action == "events.subscribe", AuditEntry.object_id == topic)
            .order_by(AuditEntry.id)
        )
        return list(rows.scalars())


async def test_a_topic_recheck_that_passes_writes_no_audit_row_and_one_that_refuses_does(client: Any) -> None:
    client.app[EXTRA]["ws_recheck_seconds"] = 0.02
    topic = "worklist:NL-C01-K01-IMG"
    token = await token_of(client, "county_reader")
    async with live_ws(client, token) as ws:
        await subscribe(ws, [topic])
        assert await _subscribe_audit(client, topic) == ["ok"], "the subscription itself is audited"
        [sub] = [s for s in client.app[BROKER].subscribers if s.actor.username == "county_reader"]
        for _ in range(500):  # bounded: 10 s at most for three periodic re-checks of the topics
            if sub.topic_checks >= 3:
                break
            await asyncio.sleep(0.02)
        assert sub.topic_checks >= 3, sub.topic_checks
        assert await _subscribe_audit(client, topic) == ["ok"], "a re-check the topic passes adds no audit row"
        close = await _leave_the_imaging_center(client, ws)
    assert close.code == 4403
    assert await _subscribe_audit(client, topic) == ["ok", "scope"], "the refusal is audited, with its code"


async def test_the_live_channel_closes_when_the_request_is_escalated_away(client: Any) -> None:
    client.app[EXTRA]["ws_recheck_seconds"] = 60.0  # no periodic re-check in time: the escalation itself triggers it
    from tests.integration.test_critical_when_found import claimed_by

    view = await claimed_by(client.hub, "county_reader")
    token = await token_of(client, "county_reader")
    async with live_ws(client, token) as ws:
        await subscribe(ws, [f"request:{view['id']}"])
        resp = await client.post(
            f"/api/v1/requests/{view['id']}/escalate",
            json={"reason": "需要上级会诊"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert resp.status == 200, await resp.text()
        seen = []
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            for _ in range(10):
                seen.append(json.loads(await asyncio.wait_for(ws.recv(), 5))["name"])
    assert seen == ["request.escalated"], "the escalation is the last thing the county reader hears of it"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
    assert f"request:{view['id']} is no longer permitted" in closed.value.rcvd.reason


async def test_metrics_from_outside_the_configured_networks_need_an_admin_or_integration_token(client: Any) -> None:
    assert (await client.get("/metrics")).status == 200, "loopback is a configured network by default"
    client.app[EXTRA]["metrics_networks"] = "10.9.9.0/24"
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers=await client.login("county_reader"))).status == 403
    resp = await client.get("/metrics", headers=await client.login("his_t01"))
    assert resp.status == 200 and "telenet" in await resp.text()
