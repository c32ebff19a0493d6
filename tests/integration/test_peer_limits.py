"""Limits per peer: MLLP connections and dead letters per address, DICOM associations per address and the
instance size; each refusal clear and counted in /metrics."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.pdu_primitives import MaximumLengthNotification
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import func, select

from gateways.dicom.node import running_node
from telenet.api.fee_routes import metrics_registry
from telenet.app import HL7_GATEWAY, build_app
from telenet.config import Settings
from telenet.domain.errors import Invalid
from telenet.services import peers
from telenet.services.metrics import Tally
from telenet.store.models import DicomInstance, HL7DeadLetter
from tests.conftest import require_tool
from tests.dicom_fixtures import TOWNSHIP_AE, dicom_settings, instance, node_for, ordered, run_tool
from tests.integration.test_dicom_node import TRANSIENT, UNKNOWN_CALLING_AE, rejection, store


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return dicom_settings(tmp_path)


async def _metrics(api: Any) -> str:
    return str(await (await api.get("/metrics")).text())


async def test_mllp_connections_and_dead_letters_per_peer(
    aiohttp_client: Any, demo_hub: Any, settings: Settings, database: Any
) -> None:
    configured = settings.replace(
        hl7_enabled=True, hl7_port=0, hl7_workers=1, hl7_max_connections_per_peer=2, hl7_dead_letters_per_peer_hour=2
    )
    app = build_app(configured, engine=database.engine)
    api = await aiohttp_client(app)
    port = app[HL7_GATEWAY].port
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        answer = await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        answer = b""
    assert answer == b"", "the third connection is closed at once"
    writer.close()
    for _, w in held:
        w.close()
    for _ in range(250):  # until the hub has seen the held connections go
        if not app[HL7_GATEWAY]._connections:
            break
        await asyncio.sleep(0.02)

    r, w = await asyncio.open_connection("127.0.0.1", port)
    for i in range(4):
        w.write(b"\x0bnot hl7 at all " + str(i).encode() + b"\x1c\x0d")
        await w.drain()
        assert b"MSA|AR" in await asyncio.wait_for(r.readuntil(b"\x1c\x0d"), 10)
    w.close()
    async with demo_hub.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(HL7DeadLetter)) == 2
    text = await _metrics(api)
    assert 'telenet_peer_refusals_total{protocol="hl7",reason="connections-per-peer"} 1.0' in text
    assert 'telenet_peer_refusals_total{protocol="hl7",reason="dead-letters-per-peer"} 2.0' in text


async def test_dicom_associations_per_peer_and_instance_size(client: Any, settings: Settings) -> None:
    view = await ordered(client, modality="CT")
    async with node_for(client.hub, settings.replace(dicom_max_associations_per_peer=1)) as node:

        def two_associations() -> tuple[bool, bool, Any]:
            ae = AE(ae_title=TOWNSHIP_AE)
            ae.add_requested_context(Verification)
            first = ae.associate("127.0.0.1", node.port, ae_title="TELENET")
            second = ae.associate("127.0.0.1", node.port, ae_title="TELENET")
            result = (first.is_established, second.is_established, rejection(second))
            for assoc in (first, second):
                if assoc.is_established:
                    assoc.release()
            return result

        # The second is rejected for now (transient, local limit exceeded), not as an unknown calling AE.
        assert await asyncio.to_thread(two_associations) == (True, False, TRANSIENT)

        def unknown_title() -> Any:
            ae = AE(ae_title="NOT-REGISTERED")
            ae.add_requested_context(Verification)
            assoc = ae.associate("127.0.0.1", node.port, ae_title="TELENET")
            if assoc.is_established:
                assoc.release()
            return rejection(assoc)

        assert await asyncio.to_thread(unknown_title) == UNKNOWN_CALLING_AE

    async with node_for(client.hub, settings.replace(dicom_max_instance_bytes=1000)) as node:
        ds = instance("CT_small.dcm", accession=view["accession_number"])
        (status,) = await store(node.port, TOWNSHIP_AE, [ds])
        assert status.Status == 0xA700 and "larger than 1000 bytes" in str(status.ErrorComment)


async def test_dicom_maximum_pdu_is_advertised_kept_by_storescu_and_enforced(
    client: Any, settings: Settings, tmp_path: Path
) -> None:
    view = await ordered(client, modality="CT")
    refusals = Tally(peers.REFUSALS_METRIC, peers.REFUSALS_HELP, ("protocol", "reason"))
    async with running_node(client.hub, settings.replace(dicom_max_pdu_bytes=16384), refusals) as node:
        # dcmtk's storescu keeps to the advertised maximum: a 39 KB instance arrives in 16 KiB PDUs.
        kept = instance("CT_small.dcm", accession=view["accession_number"])
        path = tmp_path / "ct.dcm"
        kept.save_as(path)
        done = await run_tool(
            [require_tool("storescu"), "-aet", TOWNSHIP_AE, "-aec", "TELENET", "127.0.0.1", str(node.port), str(path)]
        )
        assert done.returncode == 0, done.output

        # A peer that ignores it sends the whole instance in one PDU: aborted before the PDU is read.
        rogue = instance("CT_small.dcm", accession=view["accession_number"])

        def one_big_pdu() -> tuple[int, Any]:
            ae = AE(ae_title=TOWNSHIP_AE)
            ae.add_requested_context(str(rogue.SOPClassUID))
            assoc = ae.associate("127.0.0.1", node.port, ae_title="TELENET")
            assert assoc.is_established
            advertised = int(assoc.acceptor.maximum_length)
            for item in assoc.acceptor.user_information:  # forget the node's maximum: one P-DATA-TF
                if isinstance(item, MaximumLengthNotification):
                    item.maximum_length_received = 0
            status = assoc.send_c_store(rogue)
            if assoc.is_established:
                assoc.abort()
            return advertised, status

        advertised, status = await asyncio.to_thread(one_big_pdu)
    assert advertised == 16384
    assert "Status" not in status, "no C-STORE response: the association was aborted"
    assert refusals.values == {(("protocol", "dicom"), ("reason", "pdu-too-large")): 1.0}
    async with client.hub.sessions() as session:
        stored = set(
            (
                await session.execute(
                    select(DicomInstance.sop_instance_uid).where(
                        DicomInstance.sop_instance_uid.in_([str(kept.SOPInstanceUID), str(rogue.SOPInstanceUID)])
                    )
                )
            ).scalars()
        )
    assert stored == {str(kept.SOPInstanceUID)}


async def test_a_maximum_pdu_below_4096_is_refused(settings: Settings) -> None:
    from gateways.dicom.node import DicomNode

    with pytest.raises(Invalid, match="dicom_max_pdu_bytes"):
        DicomNode(None, settings.replace(dicom_max_pdu_bytes=1000), asyncio.get_running_loop())  # type: ignore[arg-type]


async def test_plain_connections_from_beyond_loopback_are_refused_by_a_setting(
    aiohttp_client: Any, demo_hub: Any, settings: Settings, database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every peer of a test is 127.0.0.1: here it counts as a host of the provincial network.
    monkeypatch.setattr("telenet.api.proxy.is_loopback", lambda _address: False)
    monkeypatch.setattr("telenet.tls.is_loopback", lambda _address: False)
    configured = settings.replace(plain_loopback_only=True, hl7_enabled=True, hl7_port=0, hl7_workers=1)
    app = build_app(configured, engine=database.engine)
    api = await aiohttp_client(app)

    resp = await api.get("/api/v1/centers")
    assert resp.status == 403 and (await resp.json())["type"].endswith("tls-required")

    reader, writer = await asyncio.open_connection("127.0.0.1", app[HL7_GATEWAY].port)
    writer.write(b"\x0bMSH|^~\\&|HIS|NL-C01-K01-T01|TELENET|HUB|20260302||ADT^A04|X1|P|2.5\r\x1c\x0d")
    try:
        answer = await asyncio.wait_for(reader.read(), 5)
    except ConnectionResetError:
        answer = b""
    writer.close()
    assert answer == b"", "closed without an answer"

    refusals = Tally(peers.REFUSALS_METRIC, peers.REFUSALS_HELP, ("protocol", "reason"))
    async with running_node(demo_hub, configured, refusals) as node:

        def echo() -> bool:
            ae = AE(ae_title=TOWNSHIP_AE)
            ae.add_requested_context(Verification)
            assoc = ae.associate("127.0.0.1", node.port, ae_title="TELENET")
            established = bool(assoc.is_established)
            if established:
                assoc.release()
            return established

        assert await asyncio.to_thread(echo) is False
    assert refusals.values == {(("protocol", "dicom"), ("reason", "plain-connection")): 1.0}
    hl7 = metrics_registry(app).tally(peers.REFUSALS_METRIC, peers.REFUSALS_HELP, ("protocol", "reason"))
    assert hl7.values[(("protocol", "hl7"), ("reason", "plain-connection"))] == 1.0  # /metrics itself is refused
