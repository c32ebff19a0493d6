"""TLS and peer identity bound to the institution, with peers nobody here wrote: python-hl7 over TLS with the
right and a wrong MSH-4, the ORU sender delivering to a TLS HIS, dcmtk's storescu/findscu with +tls and
client certificates (accepted with the right one, refused with another institution's or none), a spoofing
test per protocol (HL7 MSH-4, DICOM calling AE, HTTP X-Forwarded-For), and HTTPS from aiohttp."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import hl7
import hl7.mllp
import pytest
from aiohttp import web
from sqlalchemy import select, update

from telenet.app import HL7_GATEWAY, build_app
from telenet.config import Settings
from telenet.store.models import AuditEntry, Institution
from tests.conftest import TEST_PASSWORD, require_tool
from tests.dicom_fixtures import dicom_settings, instance, ordered
from tests.dicomweb_fixtures import study
from tests.integration.test_cli import free_port
from tests.integration.test_dicomweb_scope import multipart, part10
from tests.integration.test_hl7_outbox import final_report, point_township_at
from tests.interop.test_hl7_peer import exchange, his_message
from tests.tls_certs import Pki, make_pki

pytestmark = pytest.mark.interop

TOWNSHIP, OTHER = "NL-C01-K01-T01", "NL-C02-K01-T01"  # the second one is in another city
TOWNSHIP_AE = "C01K01T01"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), [TOWNSHIP, OTHER])


def client_tls(pki: Pki, who: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if who is not None:
        context.load_cert_chain(str(pki.clients[who].cert), str(pki.clients[who].key))
    return context


async def register_peers(hub: Any, pki: Pki, **networks: list[str]) -> None:
    async with hub.sessions() as session:
        for code in (TOWNSHIP, OTHER):
            await session.execute(
                update(Institution)
                .where(Institution.code == code)
                .values(peer_cert_sha256=[pki.clients[code].sha256], peer_networks=networks.get(code))
            )
        await session.commit()


def tls_settings(settings: Settings, pki: Pki, **changes: Any) -> Settings:
    return settings.replace(
        tls_cert_file=str(pki.hub.cert), tls_key_file=str(pki.hub.key), tls_ca_file=str(pki.ca), **changes
    )


# ------------------------------------------------------------------------------------------------ HL7


@pytest.fixture
async def hl7_tls(aiohttp_client: Any, demo_hub: Any, settings: Settings, database: Any, pki: Pki) -> Any:
    await register_peers(demo_hub, pki)
    app = build_app(
        tls_settings(settings, pki, hl7_enabled=True, hl7_port=0, hl7_workers=1, dicom_enabled=False, hl7_tls=True),
        engine=database.engine,
    )
    api = await aiohttp_client(app)
    api.hl7_port = app[HL7_GATEWAY].port
    return api


async def _send(port: int, context: ssl.SSLContext, message: hl7.Message) -> hl7.Message:
    reader, writer = await hl7.mllp.open_hl7_connection(
        "127.0.0.1", port, encoding="utf-8", ssl=context, server_hostname="127.0.0.1"
    )
    try:
        return await exchange(reader, writer, message)
    finally:
        writer.close()


async def test_hl7_over_tls_is_bound_to_the_certificates_institution(hl7_tls: Any, pki: Pki) -> None:
    own = await _send(hl7_tls.hl7_port, client_tls(pki, TOWNSHIP), his_message("adt_a04.hl7"))
    assert str(own.segment("MSA")[1]) == "AA", str(own)

    # Spoofing: the township's certificate speaking for the county hospital, another institution's
    # certificate speaking for the township. Both AR with an ERR naming MSH-4.
    county = his_message("adt_a04.hl7", **{TOWNSHIP: "NL-C01-K01", "ADT20240315000001": "SPOOF-1"})
    for context, message in (
        (client_tls(pki, TOWNSHIP), county),
        (client_tls(pki, OTHER), his_message("adt_a04.hl7", ADT20240315000001="SPOOF-2")),
    ):
        ack = await _send(hl7_tls.hl7_port, context, message)
        assert str(ack.segment("MSA")[1]) == "AR", str(ack)
        assert str(ack.segment("ERR")).startswith("ERR|MSH^1^4^204"), str(ack)

    metrics = await (await hl7_tls.get("/metrics")).text()
    assert 'telenet_peer_refusals_total{protocol="hl7",reason="facility-not-bound"} 2.0' in metrics


async def test_hl7_over_tls_without_a_client_certificate_is_refused(hl7_tls: Any, pki: Pki) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        await _send(hl7_tls.hl7_port, client_tls(pki, None), his_message("adt_a04.hl7"))


async def test_plain_mllp_cannot_speak_for_an_institution_with_registered_peers(
    aiohttp_client: Any, demo_hub: Any, settings: Settings, database: Any, pki: Pki
) -> None:
    await register_peers(demo_hub, pki, **{TOWNSHIP: ["10.99.0.0/16"]})
    app = build_app(
        settings.replace(hl7_enabled=True, hl7_port=0, hl7_workers=1, dicom_enabled=False), engine=database.engine
    )
    await aiohttp_client(app)
    reader, writer = await hl7.mllp.open_hl7_connection("127.0.0.1", app[HL7_GATEWAY].port, encoding="utf-8")
    try:
        spoofed = await exchange(reader, writer, his_message("adt_a04.hl7"))
        assert str(spoofed.segment("MSA")[1]) == "AR", "127.0.0.1 is none of the township's peers"
        free = await exchange(reader, writer, his_message("adt_a04.hl7", **{TOWNSHIP: "NL-C01-K01"}))
        assert str(free.segment("MSA")[1]) == "AA", str(free)
    finally:
        writer.close()


class TlsHIS:
    """python-hl7's MLLP server behind TLS as the township HIS; answers AA and keeps what it got."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.received: list[hl7.Message] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await hl7.mllp.start_hl7_server(self._client, "127.0.0.1", 0, encoding="utf-8", ssl=self.context)
        return int(self.server.sockets[0].getsockname()[1])

    async def _client(self, reader: Any, writer: Any) -> None:
        try:
            while True:
                message = await reader.readmessage()
                self.received.append(message)
                writer.writemessage(message.create_ack("AA", message_id=f"H{len(self.received)}"))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def test_the_oru_sender_delivers_to_a_tls_his(
    aiohttp_client: Any, demo_hub: Any, settings: Settings, database: Any, pki: Pki
) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    context.load_cert_chain(str(pki.clients[TOWNSHIP].cert), str(pki.clients[TOWNSHIP].key))
    context.verify_mode = ssl.CERT_REQUIRED  # the HIS also checks who is calling: the hub's certificate
    his = TlsHIS(context)
    await point_township_at(demo_hub, await his.start())
    app = build_app(
        tls_settings(
            settings, pki, hl7_enabled=True, hl7_port=0, hl7_workers=1, dicom_enabled=False, hl7_send_tls=True
        ),
        engine=database.engine,
    )
    await aiohttp_client(app)
    try:
        await final_report(demo_hub, "P-TLS", 1)
        app[HL7_GATEWAY].sender._wake.set()  # type: ignore[union-attr]
        for _ in range(300):
            if his.received:
                break
            await asyncio.sleep(0.05)
        assert len(his.received) == 1 and str(his.received[0].segment("MSH")[9]) == "ORU^R01^ORU_R01"
    finally:
        await his.stop()


# ---------------------------------------------------------------------------------------------- DICOM


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return dicom_settings(tmp_path)


def dcmtk(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    path = require_tool(tool)
    return subprocess.run(
        [path, *args], capture_output=True, text=True, timeout=60, env={**os.environ, "TCP_NODELAY": "1"}
    )


def tls_args(pki: Pki, who: str | None) -> list[str]:
    if who is None:
        return ["+tla", "+cf", str(pki.ca)]  # TLS without a certificate of our own
    return ["+tls", str(pki.clients[who].key), str(pki.clients[who].cert), "+cf", str(pki.ca)]


@pytest.fixture
async def tls_node(client: Any, settings: Settings, pki: Pki) -> Any:
    from tests.dicom_fixtures import node_for

    await register_peers(client.hub, pki)
    async with node_for(client.hub, tls_settings(settings, pki, dicom_tls=True)) as running:
        yield running


async def test_storescu_with_tls_is_accepted_only_with_the_institutions_certificate(
    client: Any, tls_node: Any, pki: Pki, tmp_path: Path
) -> None:
    view = await ordered(client, modality="CT")
    path = tmp_path / "ct.dcm"
    instance("CT_small.dcm", accession=view["accession_number"]).save_as(path)
    common = ["-aet", TOWNSHIP_AE, "-aec", "TELENET", "127.0.0.1", str(tls_node.port), str(path)]

    right = await asyncio.to_thread(dcmtk, "storescu", *tls_args(pki, TOWNSHIP), *common)
    assert right.returncode == 0, right.stderr
    # Another institution's certificate with the township's AE title: rejected at association.
    spoofed = await asyncio.to_thread(dcmtk, "storescu", *tls_args(pki, OTHER), *common)
    assert spoofed.returncode != 0 and "Calling AE Title Not Recognized" in spoofed.stdout + spoofed.stderr
    # No certificate at all: the TLS handshake fails before any association.
    anonymous = await asyncio.to_thread(dcmtk, "storescu", *tls_args(pki, None), *common)
    assert anonymous.returncode != 0 and "Association Request Failed" in anonymous.stdout + anonymous.stderr
    plain = await asyncio.to_thread(dcmtk, "storescu", *common)
    assert plain.returncode != 0, "no plain DICOM on a TLS port"
    wrong_called = await asyncio.to_thread(
        dcmtk,
        "storescu",
        *tls_args(pki, TOWNSHIP),
        "-aet",
        TOWNSHIP_AE,
        "-aec",
        "NOTTHEHUB",
        "127.0.0.1",
        str(tls_node.port),
        str(path),
    )
    assert wrong_called.returncode != 0, "the called AE must be the hub's"


async def test_findscu_worklist_over_tls_with_the_right_certificate(client: Any, tls_node: Any, pki: Pki) -> None:
    view = await ordered(client, modality="CT")
    query = ["-W", "-k", "AccessionNumber", "-k", "PatientName", "-aet", TOWNSHIP_AE, "-aec", "TELENET"]
    found = await asyncio.to_thread(dcmtk, "findscu", *tls_args(pki, TOWNSHIP), *query, "127.0.0.1", str(tls_node.port))
    assert found.returncode == 0 and view["accession_number"] in found.stdout + found.stderr, found.stderr
    # Spoofing: another institution's certificate using the township's AE title learns nothing.
    spoofed = await asyncio.to_thread(dcmtk, "findscu", *tls_args(pki, OTHER), *query, "127.0.0.1", str(tls_node.port))
    assert spoofed.returncode != 0 and view["accession_number"] not in spoofed.stdout + spoofed.stderr


# ----------------------------------------------------------------------------------------------- HTTP


async def test_x_forwarded_for_counts_only_from_a_trusted_proxy(client: Any) -> None:
    from telenet.api.context import EXTRA

    spoof = {**await client.login("township_doc"), "X-Forwarded-For": "203.0.113.7"}
    await client.get("/api/v1/requests", headers=spoof)
    client.app[EXTRA]["trusted_proxies"] = "127.0.0.1/32"
    await client.get("/api/v1/requests?state=ordered", headers=spoof)
    async with client.hub.sessions() as session:
        rows = (
            (
                await session.execute(
                    select(AuditEntry.remote_addr).where(AuditEntry.action == "request.list").order_by(AuditEntry.id)
                )
            )
            .scalars()
            .all()
        )
    assert rows == ["127.0.0.1", "203.0.113.7"]


async def test_https_from_aiohttp(settings: Settings, database: Any, demo_hub: Any, pki: Pki) -> None:
    from telenet import tls

    configured = tls_settings(settings, pki, http_tls=True)
    app = build_app(configured, engine=database.engine, background=False)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(
        runner, "127.0.0.1", port, ssl_context=tls.server_context(configured, client_certificates=False)
    ).start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"https://127.0.0.1:{port}/healthz", ssl=client_tls(pki, None)) as resp:
                assert resp.status == 200
            async with http.post(
                f"https://127.0.0.1:{port}/api/v1/auth/token",
                json={"username": "nobody", "password": TEST_PASSWORD},
                ssl=client_tls(pki, None),
            ) as resp:
                assert resp.status == 401
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    await resp.read()
            # A WADO-RS retrieve over TLS: no plain socket to sendfile to, so asyncio reads and writes the
            # files; the body is still whole, its declared length exact.
            async with http.post(
                f"https://127.0.0.1:{port}/api/v1/auth/token",
                json={"username": "township_doc", "password": TEST_PASSWORD},
                ssl=client_tls(pki, None),
            ) as resp:
                bearer = {"Authorization": f"Bearer {(await resp.json())['token']}"}
            files = study(2, patient_id="P-TLS")
            body, content_type = multipart(*(part10(ds) for ds in files))
            async with http.post(
                f"https://127.0.0.1:{port}/dicom-web/studies",
                data=body,
                headers={**bearer, **content_type},
                ssl=client_tls(pki, None),
            ) as resp:
                assert resp.status == 200, await resp.text()
            async with http.get(
                f"https://127.0.0.1:{port}/dicom-web/studies/{files[0].StudyInstanceUID}",
                headers={**bearer, "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
                ssl=client_tls(pki, None),
            ) as resp:
                data = await resp.read()
                assert resp.status == 200 and int(resp.headers["Content-Length"]) == len(data)
            assert data.count(b"Content-Location: ") == 2 and data.endswith(b"--\r\n")
            assert all(str(ds.SOPInstanceUID).encode() in data for ds in files)
    finally:
        await runner.cleanup()


# ------------------------------------------------------------------------------------ TLS per destination


@pytest.fixture(scope="module")
def pacs_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Another CA than the network's: it signs a center PACS / HIS and the client certificate the hub shows it."""
    return make_pki(tmp_path_factory.mktemp("pacs-pki"), ["PEER", "HUB"])


def destination_file(path: Path, pacs_pki: Pki, pki: Pki, tls_port: int, wrong_ca_port: int) -> str:
    hub = pacs_pki.clients["HUB"]
    path.write_text(
        f'["127.0.0.1:{tls_port}"]\nca_file = "{pacs_pki.ca}"\ncert_file = "{hub.cert}"\nkey_file = "{hub.key}"\n'
        f'["127.0.0.1:{wrong_ca_port}"]\nca_file = "{pki.ca}"\ncert_file = "{hub.cert}"\nkey_file = "{hub.key}"\n'
    )
    return str(path)


def peer_server_context(pacs_pki: Pki) -> ssl.SSLContext:
    """The destination's side: its certificate from its own CA, and the hub's client certificate required."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pacs_pki.ca))
    context.load_cert_chain(str(pacs_pki.clients["PEER"].cert), str(pacs_pki.clients["PEER"].key))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


# The sender's and the forwarder's connections need no database: a hub stand-in (no engine fixture, so these
# run once, not once per database).
NO_HUB: Any = SimpleNamespace(clock=SimpleNamespace(now=lambda: None))


async def test_each_his_is_reached_with_its_own_tls_settings(
    settings: Settings, pki: Pki, pacs_pki: Pki, tmp_path: Path
) -> None:
    from gateways.hl7.sender import ResultSender, TransportError

    tls_his, wrong_ca_his, plain_his = (
        TlsHIS(peer_server_context(pacs_pki)),
        TlsHIS(peer_server_context(pacs_pki)),
        None,
    )
    ports = [await tls_his.start(), await wrong_ca_his.start()]
    plain_his = TlsHIS(None)  # type: ignore[arg-type]
    plain_port = await plain_his.start()
    # The global setting says TLS with the network's CA; the file overrides it for the two TLS destinations.
    configured = tls_settings(
        settings,
        pki,
        hl7_send_tls=False,
        tls_destinations_file=destination_file(tmp_path / "destinations.toml", pacs_pki, pki, *ports),
    )

    async def no_worker(*_args: Any) -> Any:
        raise AssertionError("messages are framed by the test itself")

    sender = ResultSender(NO_HUB, configured, no_worker)
    message = str(his_message("adt_a04.hl7")).replace("\n", "\r").encode()
    try:
        for port, his in ((ports[0], tls_his), (plain_port, plain_his)):
            streams = await sender._connect("127.0.0.1", port)
            try:
                assert b"MSA|AA" in await sender._exchange(streams, message)
            finally:
                streams[1].close()
            assert len(his.received) == 1
        with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
            await sender._connect("127.0.0.1", ports[1])  # its entry names the network's CA, not the HIS's
        assert wrong_ca_his.received == []
    finally:
        for his in (tls_his, wrong_ca_his, plain_his):
            await his.stop()


async def test_each_pacs_is_reached_with_its_own_tls_settings(
    settings: Settings, pki: Pki, pacs_pki: Pki, tmp_path: Path
) -> None:
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

    from gateways.dicom.forwarder import Forwarder, SendError, send_study
    from telenet.services.forwarding import ForwardFile, ForwardTask

    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    def pacs(context: ssl.SSLContext | None) -> Any:
        ae = AE(ae_title="PACS")
        ae.add_supported_context(CTImageStorage)
        return ae.start_server(
            ("127.0.0.1", 0), block=False, ssl_context=context, evt_handlers=[(evt.EVT_C_STORE, on_store)]
        )

    servers = [pacs(peer_server_context(pacs_pki)), pacs(peer_server_context(pacs_pki)), pacs(None)]
    tls_port, wrong_ca_port, plain_port = (int(s.server_address[1]) for s in servers)
    configured = tls_settings(
        settings,
        pki,
        dicom_forward_tls=False,
        tls_destinations_file=destination_file(tmp_path / "destinations.toml", pacs_pki, pki, tls_port, wrong_ca_port),
    )
    forwarder = Forwarder.from_settings(NO_HUB, configured)
    assert forwarder.outbound is not None
    ds = instance("CT_small.dcm")
    path = tmp_path / "ct.dcm"
    ds.save_as(path)
    item = ForwardFile(str(path), str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.file_meta.TransferSyntaxUID))

    def forward(port: int) -> int:
        task = ForwardTask(1, 0, str(ds.StudyInstanceUID), "NL-C01-K01-IMG", "PACS", "127.0.0.1", port, (item,))
        context, name = forwarder.outbound.for_destination(task.host, task.port)  # type: ignore[union-attr]
        return send_study(task, "TELENET", context, timeout=10, server_name=name)

    try:
        assert await asyncio.to_thread(forward, tls_port) == 1
        assert await asyncio.to_thread(forward, plain_port) == 1
        with pytest.raises(SendError):
            await asyncio.to_thread(forward, wrong_ca_port)
    finally:
        for server in servers:
            await asyncio.to_thread(server.shutdown)
    assert received == [str(ds.SOPInstanceUID)] * 2


def test_a_broken_destinations_file_stops_the_start(settings: Settings, tmp_path: Path) -> None:
    from telenet import tls
    from telenet.domain.errors import Invalid

    path = tmp_path / "destinations.toml"
    for text in (
        '["no-port"]\nverify = true\n',
        '["127.0.0.1:104"]\nverify = "yes"\n',
        '["127.0.0.1:104"]\nca = "x"\n',
    ):
        path.write_text(text)
        with pytest.raises(Invalid, match="tls_destinations_file"):
            tls.OutboundTLS(settings.replace(tls_destinations_file=str(path)), default_tls=False)
    path.write_text('["127.0.0.1:104"]\nca_file = "/nonexistent/ca.pem"\n')
    with pytest.raises(Invalid, match="TLS settings of a destination"):
        tls.OutboundTLS(settings.replace(tls_destinations_file=str(path)), default_tls=False)
