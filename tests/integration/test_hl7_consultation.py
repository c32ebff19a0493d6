"""Consultations ordered over HL7 (docs/hl7-interface.md, "Consultations"), over a real MLLP socket: an ORM^O01
or OMG^O19 whose OBR-4 is the consultation service code, the wished time in TQ1-7 proposed for the requesting
side, the AA (or AE with the field); the consultant center's signed opinion goes back to the HIS as an ORU^R01."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select

from gateways.hl7.server import WorkerPool
from telenet.config import Settings
from telenet.services import consultation, queue, reports
from telenet.services.auth import actor_for_username
from telenet.store.models import HL7OutboxItem
from tests.integration.test_hl7_outbox import HIS, make_sender, point_township_at
from tests.integration.test_hl7_server import FACILITY, Peer, hl7, peer, request_by_accession, segments

__all__ = ["hl7", "peer"]  # fixtures

CON = "CON|1|CONS^远程会诊知情同意^L||||||||W|A||20260302095000\r"


def consultation_order(
    control_id: str,
    accession: str,
    *,
    message_type: str = "ORM^O01^ORM_O01",
    code: str = "CONSULT-CARDIOLOGY",
    wished: str = "20260303100000",
    consent: bool = True,
) -> bytes:
    lines = [
        f"MSH|^~\\&|HIS|{FACILITY}|TELENET|TELENET|20260302095500||{message_type}|{control_id}|P|2.5|||||CHN|"
        "UNICODE UTF-8",
        f"PID|1||TS0101-000777^^^{FACILITY}^PI||王^芳||19700101|F",
        "PV1|1|O|全科门诊",
        f"ORC|NW|{accession}^HIS|||SC||||20260302095500|||D0101^李^建国",
        f"TQ1|1||||||{wished}||U",
        f"OBR|1|{accession}^HIS||{code}^远程会诊（心内科）^99TLN|||||||||反复胸闷一月，心电图ST段压低，请心内科会诊",
    ]
    return ("\r".join(lines) + "\r" + (CON if consent else "")).encode()


async def test_a_consultation_ordered_over_hl7_and_its_opinion_back_as_oru(
    hl7: Any, peer: Peer, settings: Settings
) -> None:
    # (message, MSA-1, ERR field): accepted orders, and refusals that name the field and create nothing.
    table = [
        (consultation_order("CONS-1", "HIS-CONS-0001"), "AA", None),
        (consultation_order("CONS-2", "HIS-CONS-0002", message_type="OMG^O19^OMG_O19", code="CONSULT"), "AA", None),
        (consultation_order("CONS-3", "HIS-CONS-0003", consent=False), "AE", "CON"),
        (consultation_order("CONS-4", "HIS-CONS-0004", wished="next tuesday"), "AE", "TQ1"),
    ]
    for message, code, where in table:
        segs = segments(await peer.send(message))
        assert segs["MSA"][1] == code, segs
        if where:
            assert segs["ERR"][2].startswith(where), segs["ERR"]
    assert await request_by_accession(hl7.hub, "HIS-CONS-0003") is None
    assert await request_by_accession(hl7.hub, "HIS-CONS-0004") is None

    request = await request_by_accession(hl7.hub, "HIS-CONS-0001")
    assert request is not None
    assert (request.kind, request.state, request.subspecialty) == ("consultation", "queued", "cardiology")
    clinic = await actor_for_username(hl7.hub, "township_doc")
    view = await consultation.get(hl7.hub, clinic, request.id)
    assert view["phase"] == "proposed" and view["proposed"]["time"] == "2026-03-03T02:00:00+00:00"
    assert (view["proposed"]["by"], view["proposed"]["side"]) == ("his_t01", "requesting")
    other = await request_by_accession(hl7.hub, "HIS-CONS-0002")
    assert other is not None and other.subspecialty is None and other.kind == "consultation"

    # The consultant center agrees, accepts, holds the session and signs its opinion: an ORU to the HIS.
    his = HIS()
    await point_township_at(hl7.hub, await his.start())
    specialist = await actor_for_username(hl7.hub, "city_reader")
    await consultation.agree_time(hl7.hub, specialist, request.id)
    await queue.claim(hl7.hub, specialist, request.id)
    await consultation.start(hl7.hub, specialist, request.id)
    await reports.report(
        hl7.hub,
        specialist,
        request.id,
        {"findings": "会诊意见：考虑不稳定型心绞痛。", "impression": "建议冠脉造影。", "final": True},
    )
    async with hl7.hub.sessions() as session:
        row = (
            await session.execute(
                select(HL7OutboxItem).where(
                    HL7OutboxItem.request_id == request.id, HL7OutboxItem.message_kind == "result"
                )
            )
        ).scalar_one()
    assert row.result_status == "F"
    pool = WorkerPool(1)
    await pool.start()
    try:
        sender = make_sender(hl7.hub, settings, pool)
        # The app's own sender may lease the result first, and deliver it late when the machine is loaded: the
        # wait is bounded in time (30 s), not in rounds (five rounds were gone while its lease ran).
        for _ in range(300):
            if his.received:
                break
            await sender.run_once()
            await asyncio.sleep(0.1)
    finally:
        await pool.stop()
        await his.stop()
    oru = his.received[0]
    assert str(oru.segment("MSH")[9]).startswith("ORU^R01")
    obr = oru.segment("OBR")
    assert (str(obr[3]), str(obr[25])) == ("HIS-CONS-0001", "F")
    assert str(obr[4]).startswith("CONSULT-CARDIOLOGY^远程会诊（心内科）")
    assert "会诊意见：考虑不稳定型心绞痛。" in [str(o[5]) for o in oru.segments("OBX")]
