"""The whole surface against its authorization-and-audit table (``tests/integration/surface_table.py``).

One real server per database (aiohttp on loopback plus the DICOM node), one scenario, every row fired once per
role and scope from one module fixture; the tests then compare what was observed with the table. A route of the
application's router without a row fails ``test_every_route_has_a_row``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import select

from telenet.api.attachment_routes import DIRECTORY
from telenet.api.middleware import SESSION_COOKIE
from telenet.store.models import AuditEntry, FeeLine, Institution
from telenet.web.render import PRELOGIN_COOKIE
from tests.conftest import (
    DEFAULT_NOW,
    TEST_PASSWORD,
    Database,
    _drop_database,
    _make_database,
    engine_params,
)
from tests.dicom_fixtures import TOWNSHIP_AE, dicom_settings, instance
from tests.factories import order
from tests.integration import surface_table as table
from tests.integration.surface_table import ACCOUNTS, ROLES, SCOPES, Row, Side

# Under xdist (make test: --dist loadgroup) every test of this module runs on one worker, so each database's
# server is built once, not once per worker.
pytestmark = pytest.mark.xdist_group("surface")

OTHER_READER = "surface_other_reader"
OTHER_DOC = "surface_other_doc"
OTHER_AE = "C02K01T01"  # NL-C02-K01-T01, under an agreement with the NL-C02-K01 centers


@dataclass
class AuditSeen:
    action: str
    object_type: str
    object_path: str | None
    outcome: str
    actor: str


@dataclass
class Observed:
    """What the fixture saw: per (row key, role, scope) the status and the audit rows written meanwhile."""

    status: dict[tuple[str, str, str], int] = field(default_factory=dict)
    audit: dict[tuple[str, str, str], list[AuditSeen]] = field(default_factory=dict)
    topics: dict[tuple[str, str, str], str] = field(default_factory=dict)
    dicom: dict[tuple[str, str], str] = field(default_factory=dict)
    hl7: dict[tuple[str, str], str] = field(default_factory=dict)
    bodies: dict[tuple[str, str, str], bytes] = field(default_factory=dict)
    hl7_errors: dict[tuple[str, str], str] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)  # institution code -> path
    sides: dict[str, Side] = field(default_factory=dict)
    routes: list[tuple[str, str]] = field(default_factory=list)
    actor_institution: dict[str, str] = field(default_factory=dict)  # role -> institution code


# --- the scenario --------------------------------------------------------------------------------------------


async def _store(port: int, calling: str, datasets: list[Any]) -> list[int]:
    from pynetdicom import AE

    def run() -> list[int]:
        ae = AE(ae_title=calling)
        for ds in datasets:
            ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", port, ae_title="TELENET")
        assert assoc.is_established, f"{calling}: association refused"
        try:
            return [int(assoc.send_c_store(ds).Status) for ds in datasets]
        finally:
            assoc.release()

    return await asyncio.to_thread(run)


async def _side(
    hub: Any, port: int, files: Path, *, requester: str, reader: str, admin: str, ae: str, serial: int
) -> Side:
    from telenet.services import attachments, consultation, fees, queue, reports, requests
    from telenet.services.auth import actor_for_username
    from tests.integration.surface_web import PNG

    clinic = await actor_for_username(hub, requester)
    patient_id = f"P{serial:04d}"
    ecg = await requests.submit(
        hub, clinic, order("ecg", modality="ECG", priority="stat", patient_id=patient_id, serial=serial)
    )
    ds = instance("waveform_ecg.dcm", accession=ecg["accession_number"], patient_id=patient_id)
    assert await _store(port, ae, [ds]) == [0]
    reading = await actor_for_username(hub, reader)
    await queue.claim(hub, reading, ecg["id"])
    final = await reports.report(
        hub,
        reading,
        ecg["id"],
        {
            "findings": "窦性心律。",
            "impression": "急性下壁心肌梗死。",
            "final": True,
            "critical": True,
            "critical_items": ["ST段抬高型心肌梗死"],
        },
    )
    critical_id = final["critical_findings"][0]["id"]
    await reports.acknowledge(hub, clinic, critical_id, {"read_back_by": "值班护士", "read_back": "急性下壁心肌梗死"})
    async with hub.sessions() as session:
        line_id = (await session.execute(select(FeeLine.id).where(FeeLine.request_id == ecg["id"]))).scalar_one()
    await fees.refund(hub, await actor_for_username(hub, admin), line_id, "surface table: refunded once")
    waiting = await requests.submit(hub, clinic, order(patient_id=patient_id, serial=serial))
    assert waiting["state"] == "ordered"
    consult = await requests.submit(
        hub,
        clinic,
        order(
            "consultation",
            modality=None,
            subspecialty="cardiology",
            priority="urgent",
            patient_id=patient_id,
            serial=serial,
            participants=[reader],
            invited_centers=[final["center"]["code"]],
        ),
    )
    await consultation.post_message(hub, clinic, consult["id"], "患者胸痛加重。")
    attached = await attachments.add(hub, clinic, consult["id"], "心电图.png", "image/png", PNG, files)
    ct = await requests.submit(hub, clinic, order(modality="CT", patient_id=patient_id, serial=serial))
    image = instance("CT_small.dcm", accession=ct["accession_number"], patient_id=patient_id)
    assert await _store(port, ae, [image]) == [0]
    center_code = final["center"]["code"]
    return Side(
        institution=final["requesting_institution"]["code"],
        center_institution=final["center"]["institution"],
        center=center_code,
        request_id=ecg["id"],
        accession_number=ecg["accession_number"],
        ecg_uid=str(ds.SOPInstanceUID),
        study_uid=str(ds.StudyInstanceUID),
        critical_id=critical_id,
        fee_line_id=line_id,
        consultation_id=consult["id"],
        patient_id=patient_id,
        ordered_accession=waiting["accession_number"],
        spare_user=f"surface_spare_{serial}",
        series_uid=str(ds.SeriesInstanceUID),
        image_request_id=ct["id"],
        image_study_uid=str(image.StudyInstanceUID),
        image_series_uid=str(image.SeriesInstanceUID),
        image_uid=str(image.SOPInstanceUID),
        attachment_id=attached["id"],
    )


async def build_scenario(hub: Any, port: int, files: Path) -> dict[str, Side]:
    from telenet.services.auth import add_user

    await add_user(hub, username=OTHER_DOC, role="requester", institution="NL-C02-K01-T01", password=None)
    await add_user(hub, username="surface_other_his", role="integration", institution="NL-C02-K01-T01", password=None)
    await add_user(
        hub,
        username=OTHER_READER,
        role="reader",
        institution="NL-C02-K01",
        password=None,
        centers=["NL-C02-K01-IMG", "NL-C02-K01-ECG"],
        practice_since=date(2010, 1, 1),
    )
    # The accounts the account routes act on (disable, enable, unlock, password): one per side, used by no row.
    await add_user(hub, username="surface_spare_1", role="requester", institution="NL-C01-K01-T01", password=None)
    await add_user(hub, username="surface_spare_2", role="requester", institution="NL-C02-K01-T01", password=None)
    own = await _side(
        hub, port, files, requester="township_doc", reader="county_reader", admin="county_admin", ae=TOWNSHIP_AE,
        serial=1,
    )  # fmt: skip
    other = await _side(
        hub, port, files, requester=OTHER_DOC, reader=OTHER_READER, admin="province_admin", ae=OTHER_AE, serial=2
    )
    return {"own": own, "other": other}


# --- firing ----------------------------------------------------------------------------------------------


class Server:
    """The hub of one database: the aiohttp app from the composition root on a loopback port, and the DICOM
    node on another."""

    def __init__(self, db: Database, tmp: Path) -> None:
        self.db = db
        # A stand-in for the built OHIF viewer, so /ohif answers as it does once installed.
        viewer = tmp / "viewer"
        viewer.mkdir(exist_ok=True)
        (viewer / "index.html").write_text("<!doctype html><title>OHIF</title>", "utf-8")
        # Every row that logs in (token, form, logout, password) counts against the login limiter: per account
        # and per address, one fixture makes more than a minute's default allowance on a fast machine. The
        # limiter has its own tests (test_login_security); here it must not decide a row's status.
        self.settings = dicom_settings(tmp).replace(
            viewer_dir=str(viewer), login_attempts_per_account_minute=1000, login_attempts_per_address_minute=1000
        )

    async def __aenter__(self) -> Server:
        from gateways.dicom.node import running_node
        from telenet.api.context import HUB
        from telenet.app import build_app, make_hub
        from telenet.domain.sla import FixedClock

        self.clock = FixedClock(DEFAULT_NOW)
        self.hub = make_hub(self.settings, self.db.engine, self.clock)
        assert self.db.demo_loaded  # the demo network, every password TEST_PASSWORD (tests.conftest.load_demo)
        self.app = build_app(self.settings, engine=self.db.engine, clock=self.clock, background=False)
        self.app[HUB] = self.hub
        self.runner = web.AppRunner(self.app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.base = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        self._node = running_node(self.hub, self.settings)
        self.node = await self._node.__aenter__()
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.http.close()
        await self._node.__aexit__(None, None, None)
        await self.runner.cleanup()


async def _audit_after(hub: Any, after: int) -> tuple[int, list[AuditSeen]]:
    async with hub.sessions() as session:
        rows = (
            (await session.execute(select(AuditEntry).where(AuditEntry.id > after).order_by(AuditEntry.id)))
            .scalars()
            .all()
        )
    last = rows[-1].id if rows else after
    return last, [AuditSeen(r.action, r.object_type, r.object_path, r.outcome, r.actor) for r in rows]


async def _login_form(server: Server, username: str, password: str) -> tuple[int, str | None]:
    """The console's login form: the pre-login CSRF cookie from GET /login, then POST /login with it; the status
    and the session cookie's value (``None`` when refused)."""
    async with server.http.get(server.base + "/login", allow_redirects=False) as page:
        assert page.status == 200, await page.text()
        prelogin = page.cookies[PRELOGIN_COOKIE].value
    async with server.http.post(
        server.base + "/login",
        data={"csrf_token": prelogin, "username": username, "password": password},
        headers={"Cookie": f"{PRELOGIN_COOKIE}={prelogin}"},
        allow_redirects=False,
    ) as resp:
        session = resp.cookies.get(SESSION_COOKIE)
        return resp.status, session.value if session is not None else None


async def console_session(server: Server, username: str) -> tuple[str, str]:
    """A console session of ``username`` logged in through the form: (cookie value, CSRF token of its pages)."""
    status, value = await _login_form(server, username, TEST_PASSWORD)
    assert status == 303 and value, (username, status)
    async with server.http.get(
        server.base + "/requests", headers={"Cookie": f"{SESSION_COOKIE}={value}"}, allow_redirects=False
    ) as page:
        found = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', await page.text())
    assert found is not None, username
    return value, found.group(1)


async def _fire_page(
    server: Server, row: Row, side: Side, role: str, scope: str, sessions: dict[str, tuple[str, str]]
) -> tuple[int, bytes]:
    """A console row: the role's session cookie (none for anonymous), and its CSRF token in a POST's form."""
    if row.path == "/login" and row.method == "POST":
        username = ACCOUNTS.get(role, "nobody-at-all")
        status, _ = await _login_form(server, username, TEST_PASSWORD if scope == "own" else "wrong-password-1")
        return status, b""
    session = sessions.get(role)
    if row.fresh_token and role in ACCOUNTS:
        session = await console_session(server, ACCOUNTS[role])
    target = row.target_of(side)
    headers = {"Cookie": f"{SESSION_COOKIE}={session[0]}"} if session else {}
    form = None
    if row.method == "POST":
        form = {**(target.json or {}), "csrf_token": session[1] if session else ""}
    async with server.http.request(
        row.method, server.base + target.url, data=form, headers=headers, allow_redirects=False
    ) as resp:
        return resp.status, await resp.read()


async def _fire_route(
    server: Server, row: Row, side: Side, role: str, scope: str, tokens: dict[str, str]
) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {tokens[role]}"} if role in tokens else {}
    if row.fresh_token and role in tokens:
        async with server.http.post(
            server.base + "/api/v1/auth/token", json={"username": ACCOUNTS[role], "password": TEST_PASSWORD}
        ) as resp:
            assert resp.status == 200, await resp.text()
            headers = {"Authorization": f"Bearer {(await resp.json())['token']}"}
    target = row.target_of(side)
    url = server.base + target.url
    if row.websocket:
        try:
            async with server.http.ws_connect(url, headers=headers) as ws:
                body = b""
                if row.greets and role in tokens:  # without a credential the socket waits for an auth message
                    body = json.dumps(await ws.receive_json(timeout=10), ensure_ascii=False).encode()
                await ws.close()
                return 101, body
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status, b""
    body = target.json
    if row.path == "/api/v1/auth/token":
        username = ACCOUNTS.get(role, "nobody-at-all")
        body = {"username": username, "password": TEST_PASSWORD if scope == "own" else "wrong-password-1"}
    elif body == "ORDER":
        body = order(patient_id="P9001", serial=9001)
    headers |= target.headers or {}
    if target.data is not None:
        async with server.http.request(
            row.method, url, data=target.data, headers=headers, allow_redirects=False
        ) as resp:
            return resp.status, await resp.read()
    async with server.http.request(row.method, url, json=body, headers=headers, allow_redirects=False) as resp:
        return resp.status, await resp.read()


async def _fire_topics(server: Server, obs: Observed, tokens: dict[str, str], last: int) -> int:
    for topic, role, scope in itertools.product(table.TOPICS, tokens, SCOPES):
        name = topic.build(obs.sides[scope])
        url = f"{server.base}/api/v1/ws"
        async with server.http.ws_connect(url, headers={"Authorization": f"Bearer {tokens[role]}"}) as ws:
            await ws.send_json({"action": "subscribe", "topics": [name]})
            outcome = "?"
            for _ in range(3):
                message = await ws.receive_json(timeout=10)
                if message["type"] == "error":
                    outcome = message["code"]
                    break
                if message["type"] == "subscribed":
                    outcome = "ok" if name in message["topics"] else "?"
                    break
            await ws.close()
        key = (topic.template, role, scope)
        obs.topics[key] = outcome
        last, obs.audit[("WS " + topic.template, role, scope)] = await _audit_after(server.hub, last)
    return last


async def _fire_dicom(server: Server, obs: Observed, last: int) -> int:
    from pydicom.uid import generate_uid
    from sqlalchemy import update

    from telenet.store.models import Center
    from tests.integration import surface_dicom as scu

    pacs = scu.StorageSCP("K01PACS")
    pacs_port = await asyncio.to_thread(pacs.start)
    async with server.hub.sessions() as session:
        await session.execute(update(Center).where(Center.dicom_ae_title == "K01PACS").values(dicom_port=pacs_port))
        await session.commit()
    own = obs.sides["own"]
    port = server.node.port
    mpps_uids = {caller: generate_uid() for caller in table.DICOM_CALLERS}
    runs: dict[str, Any] = {
        "C-ECHO": lambda ae, caller: scu.echo(port, ae),
        "C-STORE": lambda ae, caller: scu.store(port, ae),
        "C-FIND study root": lambda ae, caller: scu.find_study(port, ae, own.study_uid),
        "C-FIND modality worklist": lambda ae, caller: scu.worklist(port, ae, own.ordered_accession),
        "C-MOVE study root": lambda ae, caller: scu.move(port, ae, own.study_uid, pacs, "K01PACS"),
        "C-GET study root": lambda ae, caller: scu.get(port, ae, own.study_uid),
        "MPPS N-CREATE": lambda ae, caller: scu.mpps_create(port, ae, own.ordered_accession, mpps_uids[caller]),
        "MPPS N-SET": lambda ae, caller: scu.mpps_set(port, ae, mpps_uids["own"]),
        "Storage commitment N-ACTION": lambda ae, caller: scu.commit(port, ae, scu.ECG_CLASS, own.ecg_uid),
    }
    try:
        for op in table.DICOM:
            for caller in table.DICOM_CALLERS:
                ae = table.STATIONS[op.station][caller]
                obs.dicom[(op.name, caller)] = await asyncio.to_thread(runs[op.name], ae, caller)
                last, obs.audit[("DICOM " + op.name, caller, "-")] = await _audit_after(server.hub, last)
    finally:
        await asyncio.to_thread(pacs.stop)
    return last


async def _fire_hl7(server: Server, obs: Observed) -> None:
    from gateways.hl7.server import HL7Gateway
    from tests.integration import surface_hl7

    settings = server.settings.replace(hl7_enabled=True, hl7_port=0, hl7_workers=1)
    gateway = HL7Gateway(server.hub, settings, send=False)
    await gateway.start()
    try:
        numbers = itertools.count(1)

        async def send(kind: str, sender: str, accession: str, **ids: str) -> tuple[str, str]:
            control_id = f"SURFACE{next(numbers):04d}"
            raw = surface_hl7.message(kind, table.HL7_FACILITIES[sender], control_id, accession, **ids)
            return await surface_hl7.send(gateway.port, raw)

        for row in table.HL7:
            code, event, control = row.key
            if control in ("CA", "XO", "DC"):
                # The order the row touches: placed by the own township just before, one per row.
                placed = await send(f"{code}^{event} NW", "own", f"HL7{code}{control}")
                assert placed == ("AA", ""), (row.type, placed)
            if row.type == "ADT^A40":
                # The patient each registered sender merges away: its own, registered just before.
                for sender in ("own", "other"):
                    registered = await send("ADT^A04", sender, "", patient_id=f"PRIOR-{sender}")
                    assert registered[0] == "AA", registered
            for sender in table.HL7_FACILITIES:
                accession = f"HL7{code}{control if control in ('CA', 'XO', 'DC') else sender}"
                obs.hl7[(row.type, sender)], obs.hl7_errors[(row.type, sender)] = await send(
                    row.type, sender, accession, prior_id=f"PRIOR-{sender}"
                )
    finally:
        await gateway.stop()


async def fire_everything(kind: str, tmp: Path) -> Observed:
    db = await _make_database(kind, tmp, migrate=False, demo=True)
    obs = Observed()
    try:
        async with Server(db, tmp) as server:
            obs.routes = [
                (route.method, route.resource.canonical)
                for route in server.app.router.routes()
                if route.resource is not None and route.method != "HEAD"
            ]
            obs.sides = await build_scenario(server.hub, server.node.port, server.app[DIRECTORY])
            async with server.hub.sessions() as session:
                obs.paths = dict((await session.execute(select(Institution.code, Institution.path))).all())
            tokens: dict[str, str] = {}
            for role, username in ACCOUNTS.items():
                async with server.http.post(
                    server.base + "/api/v1/auth/token", json={"username": username, "password": TEST_PASSWORD}
                ) as resp:
                    assert resp.status == 200, await resp.text()
                    tokens[role] = (await resp.json())["token"]
            sessions = {role: await console_session(server, username) for role, username in ACCOUNTS.items()}
            from telenet.services.auth import actor_for_username

            for role, username in ACCOUNTS.items():
                obs.actor_institution[role] = (await actor_for_username(server.hub, username)).institution_code
            last, _ = await _audit_after(server.hub, 0)
            for row in table.ROUTES:
                if row.audit:  # only reads have audit rows to check: skip to the newest row first
                    last, _ = await _audit_after(server.hub, last)
                for role, scope in itertools.product(ROLES, SCOPES):
                    key = (row.key, role, scope)
                    if row.credential == "session":
                        fired = await _fire_page(server, row, obs.sides[scope], role, scope, sessions)
                    else:
                        fired = await _fire_route(server, row, obs.sides[scope], role, scope, tokens)
                    obs.status[key], body = fired
                    obs.bodies[key] = body
                    if row.audit:
                        last, obs.audit[key] = await _audit_after(server.hub, last)
            last, _ = await _audit_after(server.hub, last)
            last = await _fire_topics(server, obs, tokens, last)
            last = await _fire_dicom(server, obs, last)
            await _fire_hl7(server, obs)
    finally:
        await _drop_database(db)
    return obs


@pytest.fixture(scope="module", params=engine_params())
def surface(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    tmp = tmp_path_factory.mktemp(f"surface-{request.param}")
    yield asyncio.run(asyncio.wait_for(fire_everything(request.param, tmp), timeout=300))


# --- the tests -------------------------------------------------------------------------------------------------


def _row_ids(rows: list[Any]) -> list[str]:
    return [getattr(r, "key", None) or getattr(r, "template", None) or r.name for r in rows]


def test_every_route_has_a_row(surface: Observed) -> None:
    """Walk the router of the app the composition root builds: every route needs a row, every row a route."""
    missing = sorted(
        f"{method} {path}" for method, path in surface.routes if not any(r.covers(method, path) for r in table.ROUTES)
    )
    assert missing == [], f"routes without a row in tests/integration/surface_table.py: {missing}"
    stale = sorted(r.key for r in table.ROUTES if not any(r.covers(m, p) for m, p in surface.routes))
    assert stale == [], f"rows without a route: {stale}"
    keys = [r.key for r in table.ROUTES]
    assert len(keys) == len(set(keys)), "one row per route"


@pytest.mark.parametrize("row", table.ROUTES, ids=_row_ids(table.ROUTES))
def test_route_statuses(surface: Observed, row: Row) -> None:
    seen = {role: (surface.status[(row.key, role, "own")], surface.status[(row.key, role, "other")]) for role in ROLES}
    assert seen == row.expect


def _owner_path(surface: Observed, owner: str, side: Side, role: str) -> str | None:
    """The path of the institution a row's audit must name (``None`` for data of no institution)."""
    code = _owner_code(surface, owner, side, role)
    return surface.paths[code] if code else None


def _owner_code(surface: Observed, owner: str, side: Side, role: str) -> str | None:
    if owner == "none":
        return None
    if owner == "institution":
        return side.institution
    if owner == "center":
        return side.center_institution
    assert owner == "actor", owner
    return surface.actor_institution[role]


def _succeeded(status: int) -> bool:
    """A 2xx answer, or a WebSocket handshake that switched protocols (the session is open: it was let in)."""
    return 200 <= status < 300 or status == 101


@pytest.mark.parametrize(
    "row", [r for r in table.ROUTES if r.audit], ids=_row_ids([r for r in table.ROUTES if r.audit])
)
def test_patient_data_reads_leave_their_audit_row(surface: Observed, row: Row) -> None:
    assert row.audit is not None
    for role, scope in itertools.product(ROLES, SCOPES):
        key = (row.key, role, scope)
        rows = [a for a in surface.audit[key] if a.action == row.audit.action]
        ok = [a for a in rows if a.outcome == "ok"]
        if role == "anonymous":  # no credential, no read (a socket that waits for its auth message included)
            assert ok == [], f"{key}: nothing was read without a credential"
            continue
        if _succeeded(surface.status[key]):
            owner = _owner_path(surface, row.audit.owner, surface.sides[scope], role)
            expected = [(row.audit.action, row.audit.object_type, owner, ACCOUNTS[role])]
            assert [(a.action, a.object_type, a.object_path, a.actor) for a in ok] == expected, key
        else:
            assert ok == [], f"{key}: a refused read must not be audited as ok"
        own_status = surface.status[(row.key, role, "own")]
        if scope == "other" and _succeeded(own_status) and surface.status[key] == 403:
            # Refused by scope alone: the attempt is on the record of the institution whose data it was.
            owner = _owner_path(surface, row.audit.owner, surface.sides[scope], role)
            refused = [(a.object_path, a.outcome) for a in rows if a.outcome != "ok"]
            assert refused == [(owner, "scope")], key


def test_no_answer_carries_the_other_sides_data(surface: Observed) -> None:
    """Every caller is of the own side: no answer of any route, in either scope, names an order of the other
    side (lists filter by scope, refusals do not echo what they refused). The own side's orders do appear,
    so the search would find them."""
    other = surface.sides["other"]
    secrets = [other.accession_number.encode(), other.ordered_accession.encode()]
    leaks = sorted(" ".join(key) for key, body in surface.bodies.items() if any(secret in body for secret in secrets))
    assert leaks == []
    own = surface.sides["own"].accession_number.encode()
    assert own in surface.bodies[("GET /api/v1/requests", "requester", "own")]
    assert own in surface.bodies[("GET /api/v1/requests/{id}", "reader", "own")]


def test_the_consultation_session_welcomes_whom_it_lets_in(surface: Observed) -> None:
    """A handshake that succeeded opened the session: the hub's first message is the welcome to that very
    consultation, with the caller as a peer of its own; a refused handshake sent nothing."""
    for role, scope in itertools.product(ACCOUNTS, SCOPES):
        key = ("GET /api/v1/consultations/{id}/ws", role, scope)
        if surface.status[key] != 101:
            assert surface.bodies[key] == b"", key
            continue
        welcome = json.loads(surface.bodies[key])
        assert (welcome["type"], welcome["request_id"]) == ("welcome", surface.sides[scope].consultation_id), key
        assert welcome["peer_id"].startswith(f"{ACCOUNTS[role]}#"), key


@pytest.mark.parametrize("topic", table.TOPICS, ids=_row_ids(table.TOPICS))
def test_websocket_topics(surface: Observed, topic: table.Topic) -> None:
    seen = {
        role: (surface.topics[(topic.template, role, "own")], surface.topics[(topic.template, role, "other")])
        for role in ACCOUNTS
    }
    assert seen == topic.expect
    for role, scope in itertools.product(ACCOUNTS, SCOPES):
        rows = [a for a in surface.audit[("WS " + topic.template, role, scope)] if a.action == "events.subscribe"]
        owner = _owner_path(surface, topic.owner, surface.sides[scope], role)
        outcome = surface.topics[(topic.template, role, scope)]
        assert [(a.object_type, a.object_path, a.outcome) for a in rows] == [("topic", owner, outcome)], (
            topic.template,
            role,
            scope,
        )


@pytest.mark.parametrize("op", table.DICOM, ids=_row_ids(table.DICOM))
def test_dicom_operations(surface: Observed, op: table.DicomOp) -> None:
    seen = {caller: surface.dicom[(op.name, caller)] for caller in table.DICOM_CALLERS}
    assert seen == op.expect
    if op.audit is None:
        return
    for caller in table.DICOM_CALLERS:
        rows = [a for a in surface.audit[("DICOM " + op.name, caller, "-")] if a.action == op.audit.action]
        # A retrieve naming a study outside the caller's scope leaves a refusal filed under that study's owner.
        refused = [(a.object_path, a.actor) for a in rows if a.outcome == "scope"]
        rows = [a for a in rows if a.outcome != "scope"]
        retrieve = op.audit.action in ("dicom.get", "dicom.move")
        if retrieve and caller != "own" and surface.dicom[(op.name, caller)] == "ok:0":
            ae = table.STATIONS[op.station][caller]
            assert refused == [(surface.paths[surface.sides["own"].institution], f"dicom:{ae}")], (op.name, caller)
        outcome = surface.dicom[(op.name, caller)]
        if not outcome.startswith("ok:"):
            assert [a for a in rows if a.outcome == "ok"] == [], (op.name, caller)
            continue
        found = outcome != "ok:0"
        owner = surface.sides["own"].institution if found else _station_institution(surface, op.station, caller)
        ae = table.STATIONS[op.station][caller]
        assert [(a.object_type, a.object_path, a.outcome, a.actor) for a in rows] == [
            (op.audit.object_type, surface.paths[owner], "ok", f"dicom:{ae}")
        ], (op.name, caller)


def _station_institution(surface: Observed, station: str, caller: str) -> str:
    side = surface.sides[caller]
    return side.institution if station == "township" else side.center_institution


@pytest.mark.parametrize("message", table.HL7, ids=[m.type for m in table.HL7])
def test_hl7_messages(surface: Observed, message: table.HL7Message) -> None:
    seen = {sender: surface.hl7[(message.type, sender)] for sender in table.HL7_FACILITIES}
    errors = {sender: surface.hl7_errors[(message.type, sender)] for sender in table.HL7_FACILITIES}
    assert seen == message.expect, errors
    for sender, code in seen.items():
        if code == "AE":
            assert all(part in errors[sender] for part in table.HL7_REFUSED_AT[sender]), (sender, errors[sender])


def test_every_dicom_and_hl7_operation_has_a_row() -> None:
    """The DICOM node's event bindings and the HL7 codec's message table, walked like the router."""
    from gateways.dicom import handlers
    from gateways.hl7 import codec

    bound = {
        name
        for name, value in vars(handlers.evt).items()
        if name.startswith("EVT_") and any(value is event for event, _ in _bindings())
    }
    covered = {op.event for op in table.DICOM}
    assert bound - {"EVT_CONN_OPEN"} == covered, "each bound DIMSE event has a row in surface_table.DICOM"
    supported = {("ADT", event, None) for event in codec._ADT_EVENTS} | {
        (code, event, control) for code, event in codec._ORDER_TYPES for control in table.HL7_ORDER_CONTROLS
    }
    assert supported == {m.key for m in table.HL7}, "each supported HL7 message type has a row in surface_table.HL7"


def _bindings() -> list[tuple[Any, Any]]:
    from gateways.dicom.handlers import Handlers

    class _Node:
        hub = bridge = store = None
        on_conn_open = None

    return list(Handlers(_Node()).bindings())  # type: ignore[arg-type]
