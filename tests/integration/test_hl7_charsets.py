"""Character sets per HIS over a real MLLP connection: a HIS that sends no MSH-18 is read in the set
registered for its facility (GB18030, GBK) instead of being refused, and the ORU^R01 goes out in the
destination's set with MSH-18 saying so. GB18030 and GBK bytes both ways."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select, update

from gateways.hl7.work import build_result
from telenet.services.registry_snapshot import bump_version
from telenet.store.models import Institution, Patient
from tests.integration.test_hl7_server import FACILITY, Peer, hl7, orm, peer, segments  # noqa: F401

SQLITE_ONLY = pytest.mark.parametrize("database", ["sqlite"], indirect=True)
NAME = "蒙^丽萍"


def without_msh18(raw: bytes) -> str:
    text = raw.decode("utf-8")
    head, _, rest = text.partition("\r")
    fields = head.split("|")
    return "|".join(fields[:17]) + "\r" + rest  # MSH-17 kept, MSH-18 dropped


ROWS = [
    # (registered set, bytes in, ACK code, name stored)
    ("GB18030", "gb18030", "AA", "蒙丽萍"),
    ("GBK", "gbk", "AA", "蒙丽萍"),
    (None, "gb18030", "AR", None),  # nothing registered: UTF-8, and these bytes are not UTF-8
    ("UTF-8", "utf-8", "AA", "蒙丽萍"),
]


@SQLITE_ONLY
async def test_a_his_without_msh18_is_read_in_its_registered_set(hl7: Any, peer: Peer) -> None:  # noqa: F811
    for n, (registered, codec, ack_code, stored) in enumerate(ROWS):
        async with hl7.hub.sessions() as session:
            await session.execute(
                update(Institution).where(Institution.code == FACILITY).values(hl7_charset=registered)
            )
            # As `network load` registers it: the registry version moves, and the snapshot in memory follows.
            await bump_version(session, hl7.hub.clock.now())
            await session.commit()
        hl7.gateway.hub.registry.invalidate()  # the gateway's hub process would see it within a second
        patient = f"CS-{n}"
        text = without_msh18(orm(f"CS{n:04d}", f"CSACC{n:04d}", patient_id=patient, name=NAME))
        ack = await peer.send(text.encode(codec))
        assert segments(ack, codec)["MSA"][1] == ack_code, (registered, codec)
        async with hl7.hub.sessions() as session:
            name = (await session.execute(select(Patient.name).where(Patient.his_id == patient))).scalar()
        assert name == stored, (registered, codec)


PAYLOAD = {
    "accession_number": "TN2603020000001",
    "patient": {"id": "P1", "name": "蒙丽萍", "family": "蒙", "given": "丽萍", "sex": "F"},
    "procedure": {"code": "DX", "text": "腰椎正侧位"},
    "status": "F",
    "findings": "腰椎退行性变。",
    "impression": "腰椎骨质增生。",
    "signer": {"id": "county_reader", "name": "陈立明"},
    "signed_at": "2026-03-02T02:00:00+00:00",
}

OUT = [
    ("GB18030", "gb18030", "GB 18030-2000"),
    ("GBK", "gbk", "GBK"),
    ("UTF-8", "utf-8", "UNICODE UTF-8"),
    (None, "utf-8", "UNICODE UTF-8"),
]


@pytest.mark.parametrize(("registered", "codec", "msh18"), OUT)
def test_the_oru_goes_out_in_the_destinations_set(registered: str | None, codec: str, msh18: str) -> None:
    raw = build_result(
        {**PAYLOAD, "charset": registered}, "TNR000000000001", FACILITY, datetime(2026, 3, 2, tzinfo=UTC)
    )
    text = raw.decode(codec)
    assert text.split("\r")[0].split("|")[17] == msh18
    assert "蒙^丽萍" in text and "腰椎骨质增生。" in text
    if codec != "utf-8":
        with pytest.raises(UnicodeDecodeError):
            raw.decode("utf-8")
