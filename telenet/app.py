"""The composition root: the one place that wires settings, storage, services and interfaces together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from gateways.dicom.ecg_files import render_svg_file
from gateways.dicom.node import dicom_ctx
from gateways.dicomweb import routes as dicomweb_routes
from gateways.hl7.server import HL7Gateway
from telenet.api import (
    account_routes,
    attachment_routes,
    clinical_routes,
    consultation_routes,
    dicom_routes,
    fee_routes,
    hl7_routes,
    patient_routes,
    registry_admin_routes,
    registry_routes,
    request_routes,
    signalling,
    ws,
)
from telenet.api.context import EXTRA
from telenet.api.fee_routes import metrics_registry
from telenet.api.server import build_web_app
from telenet.api.spec import Routes
from telenet.config import Settings
from telenet.domain.errors import Invalid
from telenet.domain.sla import Clock, SystemClock
from telenet.services import consultation, fees, order_status, outbox, peers, requests, study_links
from telenet.services.audit_writer import AuditWriter
from telenet.services.exclusive import run_exclusive
from telenet.services.group_commit import GroupCommit
from telenet.services.hub import Hub, HubOptions
from telenet.services.page_cache import PageCache
from telenet.services.registry_snapshot import RegistryCache
from telenet.services.sweeper import run_sweeper
from telenet.store.auth_version import auth_version
from telenet.store.db import (
    BUSY_TIMEOUT_MS,
    audit_journal_dir,
    create_engine,
    read_session_factory,
    session_factory,
)
from telenet.store.write_gate import WriteGate
from telenet.web import install as install_console

log = logging.getLogger(__name__)

ENGINE = web.AppKey("engine", AsyncEngine)
HL7_GATEWAY = web.AppKey("hl7_gateway", HL7Gateway)


def load_or_create_secret(settings: Settings) -> bytes:
    """The server secret: TELENET_SECRET, else the secret file, created (mode 0600) on first start."""
    if settings.secret:
        if len(settings.secret.strip()) < 16:
            raise Invalid("TELENET_SECRET needs at least 16 characters", code="bad-secret")
        return settings.secret.encode()
    path = settings.resolved_secret_file
    if path.exists():
        value = path.read_bytes().strip()
        if len(value) < 16:
            # An empty or short file would make the national-id HMAC key guessable: refuse to start.
            raise Invalid(
                f"the secret file {path} holds {len(value)} bytes; it needs at least 16 "
                "(delete it to have a new one made)",
                code="bad-secret",
            )
        return value
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(value)
    log.info("created a new server secret at %s", path)
    return value


#: Writers one process keeps waiting for SQLite's write lock; past them a writer is refused at once (overload).
WRITE_QUEUE_MAX = 5_000


def make_hub(settings: Settings, engine: AsyncEngine, clock: Clock | None = None) -> Hub:
    options = HubOptions(
        secret=load_or_create_secret(settings),
        token_ttl_minutes=settings.token_ttl_minutes,
        critical_ack_minutes=settings.critical_ack_minutes,
        study_quiet_seconds=settings.study_quiet_seconds,
        lease_minutes={
            "stat": settings.lease_minutes_stat,
            "urgent": settings.lease_minutes_urgent,
            "routine": settings.lease_minutes_routine,
        },
        login_attempts_per_account_minute=settings.login_attempts_per_account_minute,
        login_attempts_per_address_minute=settings.login_attempts_per_address_minute,
        login_lockout_failures=settings.login_lockout_failures,
        login_lockout_minutes=settings.login_lockout_minutes,
        claim_breach_grace_minutes=settings.claim_breach_grace_minutes,
        login_hash_queue_per_core=settings.login_hash_queue_per_core,
    )
    # SQLite has one write lock: the process's writers wait for it in one queue, in order, not in the pool.
    sqlite = engine.dialect.name == "sqlite"
    gate = WriteGate(wait_s=BUSY_TIMEOUT_MS / 1000, max_waiting=WRITE_QUEUE_MAX) if sqlite else None
    hub = Hub(
        sessions=session_factory(engine, gate=gate),
        write_gate=gate,
        clock=clock or SystemClock(),
        options=options,
        dialect=engine.dialect.name,
        engine=engine,
        read_sessions=read_session_factory(engine),
        event_listeners=[order_status.on_event, consultation.on_event],
        audit_writer=AuditWriter(session_factory(engine), journal_dir=audit_journal_dir(engine), engine=engine),
        registry=RegistryCache(read_session_factory(engine)),
        auth_version=auth_version(engine),
    )
    hub.group_commit = GroupCommit(hub.sessions, wait_ms=settings.group_commit_wait_ms, notify=hub.notify_committed)
    # Worklist pages live until this process commits an event (here, before the command answers) or its live
    # channel reads one from another process (ws.Broker.pump), at most page_cache.TTL_S.
    hub.pages = PageCache()
    hub.on_commit.append(hub.pages.clear)
    hub.follow_ups.on_routed.append(study_links.on_routed)
    hub.follow_ups.on_final.extend([consultation.on_final, fees.record_final, outbox.enqueue_result])
    hub.follow_ups.data_complete = requests.data_complete
    return hub


def route_sets() -> list[Routes]:
    return [
        registry_routes.routes,
        request_routes.routes,
        ws.routes,
        fee_routes.routes,
        hl7_routes.routes,
        dicom_routes.routes,
        patient_routes.routes,
        account_routes.routes,
        dicomweb_routes.routes,
        attachment_routes.routes,
        clinical_routes.routes,
        signalling.routes,
        consultation_routes.routes,
        registry_admin_routes.routes,
    ]


def build_app(
    settings: Settings,
    *,
    engine: AsyncEngine | None = None,
    clock: Clock | None = None,
    background: bool = True,
) -> web.Application:
    """The whole hub as an aiohttp application. ``background`` starts the workers and protocol listeners
    (tests of single endpoints switch it off and drive the workers themselves)."""
    own_engine = engine is None
    engine = engine or create_engine(settings.database_url)
    hub = make_hub(settings, engine, clock)
    app = build_web_app(hub, route_sets())
    app[ENGINE] = engine
    app[dicomweb_routes.CONFIG] = dicomweb_routes.DicomWebConfig.from_settings(settings)
    install_console(app, settings)
    app[attachment_routes.DIRECTORY] = Path(settings.var_dir) / "attachments"
    app[dicom_routes.ECG_RENDERER] = render_svg_file
    # What /healthz tells clients (simulators, monitoring) about the protocol listeners of this process.
    interfaces: dict[str, Any] = {}
    if background and settings.dicom_enabled:
        interfaces["dicom"] = {"ae_title": settings.dicom_ae_title, "port": settings.dicom_port}
    if background and settings.hl7_enabled:
        interfaces["hl7"] = {"port": settings.hl7_port}
    app[EXTRA]["interfaces"] = interfaces
    app[EXTRA]["metrics_networks"] = settings.metrics_allowed_networks
    app[EXTRA]["trusted_proxies"] = settings.trusted_proxies
    app[EXTRA]["plain_loopback_only"] = settings.plain_loopback_only
    app[EXTRA]["ice_servers"] = signalling.ice_servers(settings.webrtc_ice_servers)

    async def dispose_engine(_app: web.Application) -> AsyncIterator[None]:
        yield
        if own_engine:
            await engine.dispose()

    app.cleanup_ctx.append(dispose_engine)
    app.cleanup_ctx.append(_audit_writer(hub))
    app.cleanup_ctx.append(ws.close_sockets_ctx)
    app.cleanup_ctx.append(ws.broker_ctx)
    if background:
        app.cleanup_ctx.append(_background(hub, settings))
        refusals = metrics_registry(app).tally(peers.REFUSALS_METRIC, peers.REFUSALS_HELP, ("protocol", "reason"))
        if settings.hl7_enabled:
            hl7_gateway = HL7Gateway(hub, settings)
            hl7_gateway.refusals = refusals
            app[HL7_GATEWAY] = hl7_gateway
            app[hl7_routes.REPLAYER] = hl7_gateway.replay
            app.cleanup_ctx.append(hl7_gateway.cleanup_ctx)
        if settings.dicom_enabled:
            app.cleanup_ctx.append(dicom_ctx(hub, settings, refusals))
    return app


def _audit_writer(hub: Hub) -> Any:
    async def audit_ctx(_app: web.Application) -> AsyncIterator[None]:
        if hub.audit_writer is not None:
            await hub.audit_writer.recover()
        yield
        if hub.audit_writer is not None:
            await hub.audit_writer.close()

    return audit_ctx


def _background(hub: Hub, settings: Settings) -> Any:
    async def workers(_app: web.Application) -> AsyncIterator[None]:
        assert hub.engine is not None
        sweeper = run_exclusive(hub.engine, "sweeper", lambda: run_sweeper(hub, settings.sweep_interval_seconds))
        tasks = [asyncio.create_task(sweeper, name="sweeper")]
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return workers


def ensure_var_dir(settings: Settings) -> None:
    Path(settings.var_dir).mkdir(parents=True, exist_ok=True)
