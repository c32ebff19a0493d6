"""The HL7 rows of the surface table sent over MLLP to the hub's HL7 gateway: each message built from the
samples in ``fixtures/hl7/`` for a sending facility (MSH-4), its ACK code (MSA-1) as the outcome."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateways.hl7.mllp import frame, read_frame
from tests.factories import national_id

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7"
SAMPLE_PID3 = "TS0101-000123^^^GX-TS-0101^PI~450102196503121234^^^CHN^NNCHN"
CONSENT = "CON|1|IMG^影像检查知情同意^L||||||||W|A||20260302095000\r"


def _sample(name: str) -> str:
    return (FIXTURES / name).read_bytes().decode("utf-8")


def message(
    kind: str, facility: str, control_id: str, accession: str, prior_id: str = "", patient_id: str = ""
) -> bytes:
    """``kind`` is a row's ``HL7Message.type``; ids are unique per send so no message is a duplicate. An A40
    merges ``prior_id`` (MRG-1) into the sample's patient; ``patient_id`` registers another patient (PID-3,
    without the sample's national id) instead of the sample's."""
    code_event, _, control = kind.partition(" ")
    if code_event in ("ADT^A01", "ADT^A04", "ADT^A05", "ADT^A08", "ADT^A40"):
        structure = "ADT_A39" if code_event == "ADT^A40" else "ADT_A01"
        text = _sample("adt_a04.hl7").replace("ADT^A04^ADT_A01", f"{code_event}^{structure}")
        text = text.replace("EVN|A04|", f"EVN|{code_event[-3:]}|").replace("ADT20240315000001", control_id)
        if code_event == "ADT^A40":
            assert prior_id, "an A40 names the merged patient"
            text = text.rstrip("\r") + f"\rMRG|{prior_id}^^^GX-TS-0101^PI\r"
        if patient_id:
            text = text.replace(SAMPLE_PID3, f"{patient_id}^^^GX-TS-0101^PI")
    elif code_event == "ORM^O01":
        text = _sample("orm_o01_new_dx.hl7").replace("ORM20240315000101", control_id).replace("|P|2.4|", "|P|2.5|")
        text = text.replace("GXTS0101-DX-20240315-0001", accession)
        if control == "NW":
            text += CONSENT
        elif control == "XO":
            text = text.replace("ORC|NW|", "ORC|XO|").replace("^^^^^R", "^^^^^S")
        else:
            text = text.replace("ORC|NW|", f"ORC|{control}|")
    elif code_event in ("OMI^O23", "OMG^O19"):
        text = _sample("omi_o23_new_ct_251.hl7").replace("OMI20240315000007", control_id)
        text = text.replace("GXCO0101-CT-20240315-0007", accession).replace("HIS-7781023", accession)
        text = text.replace("GX-CO-0101", "GX-TS-0101").replace("ORC|NW|", f"ORC|{control}|")
        text = text.replace("450103195011023016", national_id(3, region="450103", birth="19501102"))
        if code_event == "OMG^O19":  # the general order: no IPC segment (that is OMI's)
            text = text.replace("OMI^O23^OMI_O23", "OMG^O19^OMG_O19").replace("IPC|", "ZZZ|")
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
