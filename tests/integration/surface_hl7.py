"""The HL7 rows of the surface table sent over MLLP to the hub's HL7 gateway: each message built from the
samples in ``fixtures/hl7/`` for a sending facility (MSH-4), its ACK code (MSA-1) as the outcome."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateways.hl7.mllp import frame, read_frame
from tests.factories import national_id

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7"
CONSENT = "CON|1|IMG^影像检查知情同意^L||||||||W|A||20260302095000\r"


def _sample(name: str) -> str:
    return (FIXTURES / name).read_bytes().decode("utf-8")


def message(kind: str, facility: str, control_id: str, accession: str) -> bytes:
    """``kind`` is a row's ``HL7Message.type``; ids are unique per send so no message is a duplicate."""
    if kind in ("ADT^A04", "ADT^A08"):
        text = _sample("adt_a04.hl7").replace("ADT^A04^ADT_A01", f"{kind}^ADT_A01")
        text = text.replace("ADT20240315000001", control_id)
    elif kind == "ORM^O01 NW":
        text = _sample("orm_o01_new_dx.hl7").replace("ORM20240315000101", control_id).replace("|P|2.4|", "|P|2.5|")
        text = text.replace("GXTS0101-DX-20240315-0001", accession) + CONSENT
    elif kind == "ORM^O01 CA":
        text = _sample("orm_o01_cancel.hl7").replace("ORM20240315000102", control_id)
        text = text.replace("GXTS0101-DX-20240315-0001", accession)
    elif kind in ("OMI^O23 NW", "OMI^O23 CA"):
        text = _sample("omi_o23_new_ct_251.hl7").replace("OMI20240315000007", control_id)
        text = text.replace("GXCO0101-CT-20240315-0007", accession).replace("HIS-7781023", accession)
        text = text.replace("GX-CO-0101", "GX-TS-0101").replace("ORC|NW|", f"ORC|{kind[-2:]}|")
        text = text.replace("450103195011023016", national_id(3, region="450103", birth="19501102"))
    else:
        raise AssertionError(f"no sample for {kind}")
    return text.replace("GX-TS-0101", facility).encode()


def ack_code(ack: bytes) -> tuple[str, str]:
    """MSA-1 and the ERR segment (empty without one), for the assertion message."""
    code, err = "?", ""
    for line in ack.decode("utf-8", "replace").split("\r"):
        if line.startswith("MSA|"):
            code = line.split("|")[1]
        elif line.startswith("ERR|"):
            err = line
    return code, err


async def send(port: int, raw: bytes) -> tuple[str, str]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    try:
        writer.write(frame(raw))
        await writer.drain()
        ack = await asyncio.wait_for(read_frame(reader), 30)
        assert ack is not None, "the listener closed the connection instead of answering"
        return ack_code(ack)
    finally:
        writer.close()
        await writer.wait_closed()
