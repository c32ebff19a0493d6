"""The HL7 shapes of clinical fidelity: ORU status P for a critical finding when found, both doctors
(OBR-32 signer, OBR-33 preliminary author, OBR-34 the technician the images name), the ordering clinician
(ORC-12 / OBR-16) in and out."""

from __future__ import annotations

from pathlib import Path

import hl7
import pytest

from gateways.hl7.codec import build_oru, parse_inbound
from gateways.hl7.mapping import order_body, report_result
from gateways.hl7.messages import Clinician, NewOrder
from tests.unit.test_hl7_codec import NOW, _report

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7"


def field(segment: hl7.Segment, n: int) -> str:
    return str(segment[n]) if len(segment) > n else ""


ROWS = [
    # (status, assistant, ordering clinician, OBR-25, ORC-5, OBR-33, ORC-12, technician, OBR-34)
    ("F", None, None, "F", "CM", "", "", None, ""),
    (
        "F",
        ("R0101", "赵晓雨"),
        Clinician("D0101", "李建国"),
        "F",
        "CM",
        "R0101&赵晓雨",
        "D0101^李建国",
        "孙^技师",
        "&孙&技师",
    ),
    ("F", ("R0201", "王五"), None, "F", "CM", "", "", "Zhou^Ming^^Dr", "&Zhou&Ming&&&Dr"),  # signer wrote it too
    ("P", None, Clinician(None, "李建国"), "P", "IP", "", "^李建国", "孙", "&孙"),
    ("C", ("R0101", "赵晓雨"), None, "C", "CM", "R0101&赵晓雨", "", "孙^技师", "&孙&技师"),
]


@pytest.mark.parametrize(
    ("status", "assistant", "ordering", "obr25", "orc5", "obr33", "orc12", "technician", "obr34"), ROWS
)
def test_oru_carries_status_both_doctors_and_the_orderer(
    status: str,
    assistant: tuple[str, str] | None,
    ordering: Clinician | None,
    obr25: str,
    orc5: str,
    obr33: str,
    orc12: str,
    technician: str | None,
    obr34: str,
) -> None:
    result = _report(
        status=status,
        critical=True,
        critical_items=["张力性气胸"],
        assistant_id=assistant[0] if assistant else None,
        assistant_name=assistant[1] if assistant else None,
        ordering_clinician=ordering,
        technician_name=technician,
    )
    parsed = hl7.parse(build_oru(result, message_control_id="X1", receiving_facility="F", now=NOW).decode())
    orc, obr = parsed.segment("ORC"), parsed.segment("OBR")
    got = (field(obr, 25), field(orc, 5), field(obr, 33), field(orc, 12), field(obr, 16), field(obr, 34))
    assert got == (obr25, orc5, obr33, orc12, orc12, obr34)
    assert str(obr[32]) == "R0201&王五"
    flags = {str(o[5]): str(o[8]) for o in parsed.segments("OBX") if str(o[3][0][0]) == "CRITICAL"}
    assert flags == {"张力性气胸": "AA"}
    assert {str(o[11]) for o in parsed.segments("OBX")} == {status}


def test_outbox_payload_maps_p_and_both_doctors() -> None:
    payload = {
        "accession_number": "A1",
        "patient": {"id": "P1", "name": "张三", "sex": "M"},
        "procedure": {"code": "DX", "text": "DX CHEST"},
        "status": "P",
        "signer": {"id": "junior_reader", "name": "赵晓雨"},
        "preliminary_author": {"id": "junior_reader", "name": "赵晓雨"},
        "ordering_clinician": {"id": "township_doc", "name": "李青山"},
        "technician": {"name": "孙^技师"},
        "signed_at": "2026-03-02T02:00:00+00:00",
        "critical": True,
        "critical_items": ["气胸"],
    }
    result = report_result(payload)
    assert (result.status, result.assistant_id, result.ordering_clinician, result.technician_name) == (
        "P",
        "junior_reader",
        Clinician("township_doc", "李青山"),
        "孙^技师",
    )


def test_the_ordering_clinician_of_an_hl7_order_reaches_the_request_body() -> None:
    message = parse_inbound((FIXTURES / "orm_o01_new_dx.hl7").read_bytes())
    assert isinstance(message, NewOrder)
    assert order_body(message)["ordering_clinician"] == {"id": "D0101", "name": "李建国"}
