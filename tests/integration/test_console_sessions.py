"""Console sessions over a real server: the login form into an HttpOnly, SameSite=Strict cookie that is a row
of the tokens table (kind console, hashed); CSRF on every change made with it; logout ends it at once; the
cookie also opens the API, DICOMweb and the WebSocket; pages carry a strict CSP and no inline script."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from telenet.services.auth import token_digest
from telenet.store.models import Token
from tests.conftest import TEST_PASSWORD
from tests.factories import order

pytestmark = pytest.mark.storage


async def login_form(client: Any, username: str, password: str = TEST_PASSWORD, **extra: str) -> Any:
    page = await client.get("/login")
    assert page.status == 200
    prelogin = SimpleCookie(page.headers["Set-Cookie"])["telenet_prelogin"].value
    token = re.search(r'name="csrf_token" value="([^"]+)"', await page.text())
    assert token is not None and token.group(1) == prelogin
    return await client.post(
        "/login",
        data={"csrf_token": prelogin, "username": username, "password": password, **extra},
        headers={"Cookie": f"telenet_prelogin={prelogin}"},
        allow_redirects=False,
    )


async def session_of(client: Any, username: str) -> tuple[str, str]:
    """A logged-in session: (cookie value, CSRF token from a page's meta tag)."""
    resp = await login_form(client, username)
    assert resp.status == 303, await resp.text()
    value = SimpleCookie(resp.headers["Set-Cookie"])["telenet_session"].value
    page = await client.get("/requests", headers={"Cookie": f"telenet_session={value}"})
    csrf = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', await page.text())
    assert csrf is not None
    return value, csrf.group(1)


async def test_login_sets_a_strict_httponly_cookie_stored_as_a_hashed_console_token(client: Any) -> None:
    resp = await login_form(client, "township_doc", next="/requests/new")
    assert resp.status == 303
    assert resp.headers["Location"] == "/requests/new"
    raw = next(h for h in resp.headers.getall("Set-Cookie") if h.startswith("telenet_session="))
    cookie = SimpleCookie(raw)["telenet_session"]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/"
    assert cookie["expires"]
    assert not cookie["secure"]  # plain HTTP on loopback; behind HTTPS the flag is set (next test)
    async with client.hub.sessions() as session:
        rows = (await session.execute(select(Token))).scalars().all()
    assert [(r.kind, r.token_hash) for r in rows] == [("console", token_digest(cookie.value))]


async def test_cookie_is_secure_under_https_and_next_never_leaves_the_site(client: Any) -> None:
    page = await client.get("/login")
    prelogin = SimpleCookie(page.headers["Set-Cookie"])["telenet_prelogin"].value
    resp = await client.post(
        "/login",
        data={"csrf_token": prelogin, "username": "township_doc", "password": TEST_PASSWORD, "next": "//evil.example/"},
        headers={"Cookie": f"telenet_prelogin={prelogin}", "X-Forwarded-Proto": "https"},
        allow_redirects=False,
    )
    assert resp.status == 303
    assert resp.headers["Location"] == "/"
    assert SimpleCookie(resp.headers["Set-Cookie"])["telenet_session"]["secure"] is True


async def test_wrong_password_or_missing_login_token_opens_no_session(client: Any) -> None:
    bad = await login_form(client, "township_doc", password="not-the-password")
    assert bad.status == 401
    assert "telenet_session" not in bad.headers.get("Set-Cookie", "")
    assert "用户名或密码错误" in await bad.text()
    forged = await client.post(
        "/login", data={"username": "township_doc", "password": TEST_PASSWORD}, allow_redirects=False
    )
    assert forged.status == 403
    async with client.hub.sessions() as session:
        assert (await session.execute(select(Token))).scalars().all() == []


async def test_the_api_takes_the_cookie_and_every_change_needs_the_csrf_token(client: Any) -> None:
    value, csrf = await session_of(client, "township_doc")
    cookie = {"Cookie": f"telenet_session={value}"}
    listed = await client.get("/api/v1/requests", headers=cookie)
    assert listed.status == 200
    assert (await listed.json())["items"] == []
    body = order(accession_number="CSRF0001")
    missing = await client.post("/api/v1/requests", json=body, headers=cookie)
    assert missing.status == 403
    assert (await missing.json())["type"].endswith(":csrf")
    wrong = await client.post("/api/v1/requests", json=body, headers={**cookie, "X-CSRF-Token": "0" * 64})
    assert wrong.status == 403
    assert (await (await client.get("/api/v1/requests", headers=cookie)).json())["items"] == []
    made = await client.post("/api/v1/requests", json=body, headers={**cookie, "X-CSRF-Token": csrf})
    assert made.status == 201, await made.text()
    assert (await made.json())["accession_number"] == "CSRF0001"
    # The CSRF token of one session is worthless with another.
    other_value, _ = await session_of(client, "township_doc")
    reused = await client.post(
        "/api/v1/requests",
        json=order(accession_number="CSRF0002"),
        headers={"Cookie": f"telenet_session={other_value}", "X-CSRF-Token": csrf},
    )
    assert reused.status == 403


async def test_logout_ends_the_session_at_once(client: Any) -> None:
    value, csrf = await session_of(client, "county_reader")
    cookie = {"Cookie": f"telenet_session={value}"}
    assert (await client.get("/api/v1/requests", headers=cookie)).status == 200
    refused = await client.post("/logout", data={}, headers=cookie, allow_redirects=False)
    assert refused.status == 403
    out = await client.post("/logout", data={"csrf_token": csrf}, headers=cookie, allow_redirects=False)
    assert out.status == 303
    assert out.headers["Location"] == "/login"
    async with client.hub.sessions() as session:
        assert (await session.execute(select(Token))).scalars().all() == []
    after = await client.get("/api/v1/requests", headers=cookie)
    assert after.status == 401
    page = await client.get("/requests", headers=cookie, allow_redirects=False)
    assert page.status == 303
    assert page.headers["Location"].startswith("/login?next=")


async def test_websocket_handshake_with_the_cookie_and_not_from_another_origin(client: Any) -> None:
    value, _ = await session_of(client, "county_reader")
    url = client.make_url("/api/v1/ws")
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(url, headers={"Cookie": f"telenet_session={value}"}) as ws:
            await ws.send_json({"action": "subscribe", "topics": ["worklist:NL-C01-K01-IMG"]})
            assert (await ws.receive_json(timeout=5))["type"] == "subscribed"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url, headers={"Cookie": f"telenet_session={value}", "Origin": "http://evil.example"})
        assert refused.value.status == 403


async def test_pages_carry_a_strict_csp_and_no_inline_script_or_style(client: Any) -> None:
    screens = {
        "township_doc": ("/login", "/requests", "/requests/new"),
        "county_reader": ("/centers/NL-C01-K01-IMG/worklist",),
        "county_coord": ("/centers/NL-C01-K01-IMG/board",),
    }
    for username, paths in screens.items():
        await _no_inline_code(client, username, paths)


async def _no_inline_code(client: Any, username: str, paths: tuple[str, ...]) -> None:
    value, _ = await session_of(client, username)
    cookie = {"Cookie": f"telenet_session={value}"}
    for path in paths:
        resp = await client.get(path, headers=cookie)
        assert resp.status == 200, path
        assert resp.headers["Content-Security-Policy"].startswith("default-src 'self'")
        html = await resp.text()
        assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == [], path
        assert " style=" not in html and "<style" not in html, path
        assert re.search(r"\son[a-z]+=", html) is None, path


async def test_language_by_accept_language_or_the_switch(client: Any) -> None:
    english = await client.get("/login", headers={"Accept-Language": "en-US,en;q=0.9"})
    assert '<html lang="en">' in await english.text()
    assert "Username" in await english.text()
    chinese = await client.get("/login")
    assert "用户名" in await chinese.text()
    value, csrf = await session_of(client, "township_doc")
    cookie = f"telenet_session={value}"
    switched = await client.post(
        "/lang",
        data={"csrf_token": csrf, "lang": "en", "next": "/requests"},
        headers={"Cookie": cookie},
        allow_redirects=False,
    )
    assert switched.status == 303
    lang = SimpleCookie(switched.headers["Set-Cookie"])["telenet_lang"].value
    page = await client.get("/requests", headers={"Cookie": f"{cookie}; telenet_lang={lang}"})
    assert "My requests" in await page.text()
