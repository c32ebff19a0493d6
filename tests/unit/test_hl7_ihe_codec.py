"""The HL7 codec's IHE Scheduled Workflow parts, pure: order control (XO, DC), ADT A01/A05/A40, PID-3 by
identifier type, IPC-3, the ERR location of a failing order group, ORR^O02 / ORI^O24, and the order status
message (ORM^O01 ORC-1 SC) in v2.3.1 and v2.5.1, read back by python-hl7 (a parser nobody here wrote)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import hl7
import pytest

from gateways.hl7.ack import _erl, build_order_response
from gateways.hl7.codec import (
    CancelOrder,
    ChangeOrder,
    DiscontinueOrder,
    ErrorInfo,
    MergePatient,
    NewOrder,
    OrderGroups,
    PatientUpdate,
    Rejected,
    parse_inbound,
)
from gateways.hl7.status import build_order_status

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7"
NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


def text(name: str) -> str:
    return (FIXTURES / name).read_bytes().decode("utf-8")


def variant(old: str, new: str, name: str = "orm_o01_new_dx.hl7") -> bytes:
    source = text(name)
    assert old in source
    return source.replace(old, new).encode("utf-8")


def test_xo_carries_only_what_changes() -> None:
    data = variant("ORC|NW|", "ORC|XO|").replace(b"^^^^^R", b"^^^^^S")
    msg = parse_inbound(data)
    assert isinstance(msg, ChangeOrder)
    assert (msg.accession_number, msg.priority, msg.body_part) == ("GXTS0101-DX-20240315-0001", "stat", "CHEST")
    assert msg.clinical_question == "咳嗽两周伴低热，排除肺部感染" and msg.scheduled_at is None


def test_xo_without_any_change_is_refused() -> None:
    source = text("orm_o01_new_dx.hl7")
    head = source[: source.index("ORC|")]
    msg = parse_inbound((head + "ORC|XO|GXTS0101-DX-20240315-0001^HIS\r").encode())
    assert isinstance(msg, Rejected) and (msg.ack_code, msg.error_code) == ("AE", 101)


def test_dc_with_its_reason() -> None:
    old = "ORC|NW|GXTS0101-DX-20240315-0001^HIS|||SC||^^^^^R||20240315091500|||D0101^李^建国"
    data = variant(old, old.replace("ORC|NW|", "ORC|DC|") + "||||^患者转院")
    msg = parse_inbound(data)
    assert isinstance(msg, DiscontinueOrder)
    assert (msg.accession_number, msg.reason) == ("GXTS0101-DX-20240315-0001", "患者转院")


@pytest.mark.parametrize("event", ["A01", "A05"])
def test_admit_and_preadmit_register_the_patient(event: str) -> None:
    msg = parse_inbound(variant("ADT^A04", f"ADT^{event}", "adt_a04.hl7"))
    assert isinstance(msg, PatientUpdate) and msg.message_type == f"ADT^{event}"


def test_a40_names_the_surviving_and_the_merged_id() -> None:
    source = text("adt_a04.hl7").replace("ADT^A04^ADT_A01", "ADT^A40^ADT_A39").replace("ADT^A04", "ADT^A40")
    msg = parse_inbound((source.rstrip("\r") + "\rMRG|TS0101-000999^^^GX-TS-0101^PI\r").encode())
    assert isinstance(msg, MergePatient)
    assert (msg.patient.id, msg.prior_id) == ("TS0101-000123", "TS0101-000999")
    without = parse_inbound(source.encode())
    assert isinstance(without, Rejected) and (without.error_location, without.error_code) == ("MRG", 100)


@pytest.mark.parametrize(
    ("pid3", "his_id", "national", "identifiers"),
    [
        ("MR7^^^H^MR~PI9^^^H^PI", "PI9", None, (("MR", "MR7"), ("PI", "PI9"))),
        ("MR7^^^H^MR~450102196503121234^^^CHN^NN", "MR7", "450102196503121234", (("MR", "MR7"),)),
        ("X1~MR7^^^H^MR", "MR7", None, (("MR", "MR7"),)),
        ("X1", "X1", None, ()),
    ],
    ids=["PI-before-MR", "NN-of-CHN", "typed-before-untyped", "untyped"],
)
def test_pid3_is_mapped_by_identifier_type(
    pid3: str, his_id: str, national: str | None, identifiers: tuple[tuple[str, str], ...]
) -> None:
    source = text("adt_a04.hl7")
    pid = next(line for line in source.split("\r") if line.startswith("PID|"))
    fields = pid.split("|")
    fields[3] = pid3
    msg = parse_inbound(source.replace(pid, "|".join(fields)).encode())
    assert isinstance(msg, PatientUpdate)
    assert (msg.patient.id, msg.patient.national_id, msg.patient.identifiers) == (his_id, national, identifiers)


def test_ipc3_fixes_the_study_instance_uid() -> None:
    msg = parse_inbound(text("omi_o23_new_ct_251.hl7").encode())
    assert isinstance(msg, NewOrder) and msg.study_instance_uid == "1.2.156.112605.18587.1.20240315.7"
    bad = parse_inbound(variant("1.2.156.112605.18587.1.20240315.7", "not-a-uid", "omi_o23_new_ct_251.hl7"))
    assert isinstance(bad, Rejected) and (bad.error_location, bad.error_code) == ("IPC-3", 102)


def test_erl_of_a_group() -> None:
    assert [_erl(x) for x in ("OBR[2]-24", "ORC[3]", "PID-3", "ORC-2.1")] == [
        "OBR^2^24",
        "ORC^3",
        "PID^1^3",
        "ORC^1^2^1^1",
    ]


def two_groups(version: str = "2.5") -> OrderGroups:
    source = text("orm_o01_new_dx.hl7").replace("|P|2.4|", f"|P|{version}|")
    if version == "2.3.1":
        source = source.replace("ORM^O01^ORM_O01", "ORM^O01")
    second = source[source.index("ORC|") :].replace("GXTS0101-DX-20240315-0001", "GXTS0101-CT-20240315-0002")
    msg = parse_inbound((source + second.replace("ORC|NW|", "ORC|CA|")).encode())
    assert isinstance(msg, OrderGroups)
    assert isinstance(msg.orders[0], NewOrder) and isinstance(msg.orders[1], CancelOrder)
    return msg


@pytest.mark.parametrize("version", ["2.3.1", "2.5"])
def test_orr_answers_every_group(version: str) -> None:
    msg = two_groups(version)
    ok = hl7.parse(build_order_response(msg, message_control_id="TNA1", now=NOW).decode().rstrip("\r"))  # type: ignore[union-attr]
    expected_type = "ORR^O02" if version == "2.3.1" else "ORR^O02^ORR_O02"
    assert str(ok.segment("MSH")[9]) == expected_type
    assert [(str(o[1]), str(o[2]), str(o[3])) for o in ok.segments("ORC")] == [
        ("OK", "GXTS0101-DX-20240315-0001", "GXTS0101-DX-20240315-0001"),
        ("CR", "GXTS0101-CT-20240315-0002", "GXTS0101-CT-20240315-0002"),
    ]
    error = ErrorInfo(204, "ORC[2]-2", "order group 2: no request has accession number X")
    refused = build_order_response(msg, message_control_id="TNA2", now=NOW, error=error)
    assert refused is not None
    parsed = hl7.parse(refused.decode().rstrip("\r"))
    assert str(parsed.segment("MSA")[1]) == "AE"
    assert [str(o[1]) for o in parsed.segments("ORC")] == ["UA", "UC"]


@pytest.mark.parametrize(
    ("version", "msh_9"), [("2.3.1", "ORM^O01"), ("2.5.1", "ORM^O01^ORM_O01"), (None, "ORM^O01^ORM_O01")]
)
def test_order_status_message(version: str | None, msh_9: str) -> None:
    payload = {
        "message": "status",
        "accession_number": "TN26120100000007",
        "placer_order_number": "HIS-7",
        "filler_order_number": "TN26120100000007",
        "order_status": "returned",
        "version": version,
        "procedure": {"code": "DX0001", "text": "胸部正位片"},
        "patient": {"id": "P1", "name": "张三", "family": "张", "given": "三", "sex": "M", "birth_date": "1965-03-12"},
        "at": "2026-12-01T02:00:00+00:00",
        "reason": "图像质量不合格",
    }
    raw = build_order_status(payload, message_control_id="TNR000000000001", receiving_facility="NL-T01", now=NOW)
    msg = hl7.parse(raw.decode("utf-8").rstrip("\r"))
    assert (str(msg.segment("MSH")[9]), str(msg.segment("MSH")[12])) == (msh_9, version or "2.5.1")
    orc = msg.segment("ORC")
    assert (str(orc[1]), str(orc[2]), str(orc[3]), str(orc[5]), str(orc[9])) == (
        "SC", "HIS-7", "TN26120100000007", "HD", "20261201100000+0800",
    )  # fmt: skip
    assert str(orc[16]) == "^图像质量不合格" and str(msg.segment("PID")[5]) == "张^三"
    assert str(msg.segment("OBR")[4]) == "DX0001^胸部正位片"


def test_omg_o19_is_an_order_and_hears_back_in_omg() -> None:
    source = text("omi_o23_new_ct_251.hl7").replace("OMI^O23^OMI_O23", "OMG^O19^OMG_O19")
    msg = parse_inbound(source.replace("IPC|", "ZZZ|").encode())
    assert isinstance(msg, NewOrder) and msg.message_type == "OMG^O19" and msg.modality == "CT"
    orr = build_order_response(msg, message_control_id="TNA3", now=NOW)
    assert orr is not None and b"|ORG^O20^ORG_O20|" in orr
    payload = {
        "accession_number": "A1", "order_status": "scheduled", "version": "2.5.1", "order_message_type": "OMG^O19",
        "patient": {"id": "P1", "name": "陆文华"}, "at": "2026-12-01T02:00:00+00:00",
    }  # fmt: skip
    status = build_order_status(payload, message_control_id="TNR1", receiving_facility="F", now=NOW)
    assert str(hl7.parse(status.decode().rstrip("\r")).segment("MSH")[9]) == "OMG^O19^OMG_O19"
