"""HL7 v2 codec: fixtures to dataclasses, the broken corpus to AR/AE, ACK and ORU^R01 built and read back
by hl7apy and by python-hl7 (a parser nobody here wrote)."""

from __future__ import annotations

import dataclasses
import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import hl7
import pytest
from hl7apy.parser import parse_message

from gateways.hl7.codec import (
    AckInfo,
    CancelOrder,
    Clinician,
    Consent,
    ErrorInfo,
    InvalidAck,
    NewOrder,
    OrderGroups,
    PatientData,
    PatientUpdate,
    Rejected,
    ReportResult,
    build_ack,
    build_ack_for,
    build_oru,
    parse_ack,
    parse_inbound,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hl7"
NOW = datetime(2024, 3, 15, 10, 30, 5, tzinfo=timezone(timedelta(hours=8)))

ZHANG_SAN = PatientData(
    id="TS0101-000123",
    family="张",
    given="三",
    display="张三",
    sex="M",
    birth_date=date(1965, 3, 12),
    national_id="450102196503121234",
    identifiers=(("PI", "TS0101-000123"),),
)


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def text(name: str) -> str:
    return raw(name).decode("utf-8")


def segments(message: bytes, charset: str = "utf-8") -> dict[str, list[list[str]]]:
    """Segment name -> list of field lists (index = HL7 field number), by plain splitting."""
    out: dict[str, list[list[str]]] = {}
    for line in message.decode(charset).split("\r"):
        if line:
            fields = line.split("|")
            if fields[0] == "MSH":
                fields.insert(1, "|")
            out.setdefault(fields[0], []).append(fields)
    return out


# ------------------------------------------------------------------------------------------- inbound


def test_adt_a04_zhang_san() -> None:
    assert parse_inbound(raw("adt_a04.hl7")) == PatientUpdate(
        facility="GX-TS-0101",
        message_control_id="ADT20240315000001",
        version="2.4",
        patient=ZHANG_SAN,
        message_type="ADT^A04",
        sending_application="HIS",
        charset="utf-8",
    )


def test_adt_a08_231_national_id_from_pid19() -> None:
    msg = parse_inbound(raw("adt_a08.hl7"))
    assert isinstance(msg, PatientUpdate)
    assert (msg.version, msg.message_type, msg.facility) == ("2.3.1", "ADT^A08", "GX-TS-0102")
    assert msg.patient == PatientData(
        id="TS0102-004417",
        family="韦",
        given="美玲",
        display="韦美玲",
        sex="F",
        birth_date=date(1988, 7, 2),
        national_id="450127198807024521",
        identifiers=(("PI", "TS0102-004417"),),
    )


def test_orm_new_dx_routine() -> None:
    assert parse_inbound(raw("orm_o01_new_dx.hl7")) == NewOrder(
        facility="GX-TS-0101",
        message_control_id="ORM20240315000101",
        version="2.4",
        patient=ZHANG_SAN,
        accession_number="GXTS0101-DX-20240315-0001",
        kind="imaging",
        modality="DX",
        procedure_code="DX0001",
        procedure_text="胸部正位片",
        body_part="CHEST",
        priority="routine",
        clinical_question="咳嗽两周伴低热，排除肺部感染",
        ordering_clinician=Clinician(id="D0101", name="李建国"),
        consent=None,
        placer_order_number="GXTS0101-DX-20240315-0001",
        filler_order_number=None,
        message_type="ORM^O01",
        sending_application="HIS",
        charset="utf-8",
    )


def test_orm_new_ecg_stat_231() -> None:
    msg = parse_inbound(raw("orm_o01_new_ecg.hl7"))
    assert isinstance(msg, NewOrder)
    assert (msg.kind, msg.modality, msg.priority) == ("ecg", "ECG", "stat")
    assert msg.patient.display == "黄桂兰"
    assert msg.accession_number == "GXTS0103-ECG-20240315-0012"
    assert msg.clinical_question == "胸痛1小时，伴大汗"
    assert msg.body_part is None
    assert msg.ordering_clinician == Clinician(id="D0307", name="韦志强")


def test_omi_o23_251_tq1_ipc_and_consent() -> None:
    msg = parse_inbound(raw("omi_o23_new_ct_251.hl7"))
    assert isinstance(msg, NewOrder)
    assert msg.message_type == "OMI^O23"
    assert msg.version == "2.5.1"
    assert msg.accession_number == "GXCO0101-CT-20240315-0007"  # IPC-1 wins over ORC-2
    assert msg.placer_order_number == "HIS-7781023"
    assert (msg.kind, msg.modality, msg.priority) == ("imaging", "CT", "urgent")
    assert msg.clinical_question == "突发言语不清2小时，排除脑出血"  # OBR-31 when OBR-13 is empty
    assert msg.patient.display == "陆文华"
    assert msg.patient.national_id == "450103195011023016"
    assert msg.patient.id == "CO0101-0200456"
    assert msg.consent == Consent(
        given_by="陆建明",
        given_at=datetime(2024, 3, 15, 10, 10),
        relationship="3",
        mode="W",
        status="A",
        granted=True,
    )


def test_orm_cancel() -> None:
    msg = parse_inbound(raw("orm_o01_cancel.hl7"))
    assert msg == CancelOrder(
        facility="GX-TS-0101",
        message_control_id="ORM20240315000102",
        version="2.4",
        accession_number="GXTS0101-DX-20240315-0001",
        patient=ZHANG_SAN,
        message_type="ORM^O01",
        sending_application="HIS",
        charset="utf-8",
    )


def test_gb18030_fixture_decodes() -> None:
    data = raw("orm_o01_gb18030.hl7")
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")
    msg = parse_inbound(data)
    assert isinstance(msg, NewOrder)
    assert msg.charset == "gb18030"
    assert msg.patient.display == "蒙丽萍"
    assert msg.procedure_text == "腰椎正侧位片"
    assert msg.clinical_question == "腰痛三月，弯腰时加重"
    assert msg.body_part == "LSPINE"


def test_gb18030_trail_byte_that_looks_like_a_field_separator() -> None:
    assert b"|" in "瑋".encode("gb18030")  # 0x8C 0x7C: splitting the raw bytes on | would break PID-5
    data = text("orm_o01_new_dx.hl7").replace("UNICODE UTF-8", "GB18030").replace("张^三", "张^瑋")
    msg = parse_inbound(data.encode("gb18030"))
    assert isinstance(msg, NewOrder)
    assert msg.patient.display == "张瑋"
    assert msg.patient.sex == "M"


@pytest.mark.parametrize(
    ("name", "ack_code", "location", "code"),
    [
        ("no_msh.hl7", "AR", "MSH", 100),
        ("wrong_field_separator.hl7", "AR", "MSH-1", 102),
        ("truncated.hl7", "AR", "MSH-9", 101),
        ("wrong_version.hl7", "AR", "MSH-12", 203),
        ("unknown_type.hl7", "AR", "MSH-9", 200),
        ("invalid_utf8.hl7", "AR", "MSH-18", 102),
        ("missing_pid3.hl7", "AE", "PID-3", 101),
    ],
)
def test_broken_corpus(name: str, ack_code: str, location: str, code: int) -> None:
    msg = parse_inbound(raw(f"broken/{name}"))
    assert isinstance(msg, Rejected)
    assert (msg.ack_code, msg.error_location, msg.error_code) == (ack_code, location, code)
    assert msg.reason


def test_broken_messages_keep_what_header_they_have() -> None:
    wrong_sep = parse_inbound(raw("broken/wrong_field_separator.hl7"))
    assert isinstance(wrong_sep, Rejected)
    assert (wrong_sep.message_control_id, wrong_sep.facility) == ("ORM20240315000201", "GX-TS-0101")
    bad_bytes = parse_inbound(raw("broken/invalid_utf8.hl7"))
    assert isinstance(bad_bytes, Rejected)
    assert bad_bytes.message_control_id == "ADT20240315000099"
    assert bad_bytes.raw_text is None
    version = parse_inbound(raw("broken/wrong_version.hl7"))
    assert isinstance(version, Rejected)
    assert version.version == "2.9"
    assert version.raw_text is not None and "张^三" in version.raw_text
    no_msh = parse_inbound(raw("broken/no_msh.hl7"))
    assert isinstance(no_msh, Rejected)
    assert no_msh.message_control_id is None


def _variant(old: str, new: str, name: str = "orm_o01_new_dx.hl7") -> bytes:
    source = text(name)
    assert old in source
    return source.replace(old, new).encode("utf-8")


def _cancel_without_accession() -> bytes:
    data = _variant("ORC|CA|GXTS0101-DX-20240315-0001^HIS", "ORC|CA|", "orm_o01_cancel.hl7")
    return data.replace(b"OBR|1|GXTS0101-DX-20240315-0001^HIS|", b"OBR|1||")


@pytest.mark.parametrize(
    ("data", "ack_code", "location", "code"),
    [
        (_variant("UNICODE UTF-8", "BIG5"), "AR", "MSH-18", 103),
        (_variant("ORM^O01^ORM_O01", "ORM^O02"), "AR", "MSH-9", 201),
        (_variant("|ORM20240315000101|", "||"), "AE", "MSH-10", 101),
        (_variant("|GX-TS-0101|TELENET|", "||TELENET|"), "AE", "MSH-4", 101),
        (_variant("ORC|NW|", "ORC|RP|"), "AE", "ORC-1", 103),
        (_variant("DX0001^胸部正位片^L", ""), "AE", "OBR-4", 101),
        (_variant("|DX|||^^^^^R", "|LAB|||^^^^^R"), "AE", "OBR-24", 103),
        (_variant("张^三", ""), "AE", "PID-5", 101),
        (_variant("19650312", "19651312"), "AE", "PID-7", 102),
        (_variant("MSH|^~\\&|", "MSH|^~\\|"), "AR", "MSH-2", 102),
        (_cancel_without_accession(), "AE", "ORC-2", 101),
    ],
    ids=[
        "charset",
        "event",
        "msh10",
        "msh4",
        "order-control",
        "obr4",
        "modality",
        "name",
        "birth-date",
        "encoding-chars",
        "cancel-accession",
    ],
)
def test_rejections(data: bytes, ack_code: str, location: str, code: int) -> None:
    msg = parse_inbound(data)
    assert isinstance(msg, Rejected), msg
    assert (msg.ack_code, msg.error_location, msg.error_code) == (ack_code, location, code)


def test_cancel_without_obr_accession() -> None:
    data = _variant("ORC|CA|GXTS0101-DX-20240315-0001^HIS", "ORC|CA|", "orm_o01_cancel.hl7")
    data = data.replace(b"OBR|1|GXTS0101", b"OBR|1||GXTS0101")  # filler number only: still an accession
    msg = parse_inbound(data)
    assert isinstance(msg, CancelOrder)
    assert msg.accession_number == "GXTS0101-DX-20240315-0001"


@pytest.mark.parametrize("separator", ["\n", "\r\n"])
def test_lf_and_crlf_segment_separators(separator: str) -> None:
    data = text("orm_o01_new_dx.hl7").replace("\r", separator).encode()
    assert parse_inbound(data) == parse_inbound(raw("orm_o01_new_dx.hl7"))


def test_escape_sequences_are_decoded() -> None:
    data = _variant("咳嗽两周伴低热，排除肺部感染", "咳嗽\\F\\发热 \\S\\ 2\\T\\3 \\R\\ C:\\E\\x \\H\\重要\\N\\")
    msg = parse_inbound(data)
    assert isinstance(msg, NewOrder)
    assert msg.clinical_question == "咳嗽|发热 ^ 2&3 ~ C:\\x 重要"


def test_priority_and_modality_fallbacks() -> None:
    data = _variant("|DX|||^^^^^R", "||||^^^^^A")
    msg = parse_inbound(data)
    assert isinstance(msg, NewOrder)
    assert msg.modality == "DX"  # from the OBR-4 code prefix DX0001
    assert msg.priority == "urgent"  # OBR-27.6 A
    radiology = parse_inbound(_variant("DX0001^胸部正位片^L|", "0001^胸部正位片^L|").replace(b"|DX|", b"|RAD|"))
    assert isinstance(radiology, NewOrder)
    assert radiology.modality == "DX"


def test_segment_unknown_to_version_is_ignored() -> None:
    con = "\rCON|1|IMG^影像检查知情同意^L||||||||W|A||20240315101000\r"
    in_24 = parse_inbound(raw("orm_o01_new_dx.hl7") + con.encode()[1:])
    assert isinstance(in_24, NewOrder)
    assert in_24.consent is None  # CON does not exist before 2.5
    in_25 = parse_inbound(_variant("|P|2.4|", "|P|2.5|") + con.encode()[1:])
    assert isinstance(in_25, NewOrder)
    assert in_25.consent is not None and in_25.consent.given_by == "张三"


def test_z_segment_and_bom_are_tolerated() -> None:
    msg = parse_inbound(b"\xef\xbb\xbf" + raw("adt_a04.hl7") + "ZPI|1|自定义\r".encode())
    assert isinstance(msg, PatientUpdate)


def test_two_orders_in_one_message_are_two_groups() -> None:
    source = text("orm_o01_new_dx.hl7")
    orc_obr = source[source.index("ORC|") :].replace("GXTS0101-DX-20240315-0001", "GXTS0101-CT-20240315-0002")
    msg = parse_inbound((source + orc_obr.replace("DX0001^胸部正位片", "CT0007^头颅CT平扫")).encode())
    assert isinstance(msg, OrderGroups)
    assert [(o.accession_number, o.modality) for o in msg.orders if isinstance(o, NewOrder)] == [
        ("GXTS0101-DX-20240315-0001", "DX"),
        ("GXTS0101-CT-20240315-0002", "DX"),
    ]


def test_a_bad_second_group_is_located_in_it() -> None:
    source = text("orm_o01_new_dx.hl7")
    orc_obr = source[source.index("ORC|") :].replace("GXTS0101-DX-20240315-0001", "GXTS0101-CT-20240315-0002")
    msg = parse_inbound((source + orc_obr.replace("|DX|||^^^^^R", "|ZZ|||^^^^^R")).encode())
    assert isinstance(msg, Rejected)
    assert (msg.ack_code, msg.error_location, msg.error_code) == ("AE", "OBR[2]-24", 103)
    assert msg.reason.startswith("order group 2:")


def test_never_raises_on_cut_or_garbled_input() -> None:
    data = raw("omi_o23_new_ct_251.hl7")
    for cut in range(0, len(data), 23):
        assert isinstance(parse_inbound(data[:cut]), NewOrder | Rejected)
    for junk in (b"", b"\x00" * 10, b"MSH", b"MSH|", b"MSH|^~\\&", b"\x0b\x1c\r", bytes(range(256))):
        assert isinstance(parse_inbound(junk), Rejected)


def test_results_are_picklable_for_a_process_pool() -> None:
    for name in ("omi_o23_new_ct_251.hl7", "orm_o01_cancel.hl7", "adt_a04.hl7", "broken/no_msh.hl7"):
        msg = parse_inbound(raw(name))
        assert pickle.loads(pickle.dumps(msg)) == msg


# ----------------------------------------------------------------------------------------------- ACK


def test_ack_aa_echoes_control_id() -> None:
    msg = parse_inbound(raw("orm_o01_new_dx.hl7"))
    ack = build_ack_for(msg, message_control_id="TN000001", now=NOW)
    segs = segments(ack)
    assert "ERR" not in segs
    msh, msa = segs["MSH"][0], segs["MSA"][0]
    assert msh[3:7] == ["TELENET", "TELENET", "HIS", "GX-TS-0101"]
    assert (msh[7], msh[9], msh[10], msh[12], msh[18]) == (
        "20240315103005+0800",
        "ACK^O01^ACK",
        "TN000001",
        "2.4",
        "UNICODE UTF-8",
    )
    assert msa[1:3] == ["AA", "ORM20240315000101"]
    parsed = hl7.parse(ack.decode())
    assert str(parsed.segment("MSA")[2]) == "ORM20240315000101"


def test_ack_ae_24_has_err1_and_msa6() -> None:
    msg = parse_inbound(raw("broken/missing_pid3.hl7"))
    ack = build_ack_for(msg, message_control_id="TN000002", now=NOW)
    segs = segments(ack)
    assert segs["MSA"][0][1:3] == ["AE", "ORM20240315000401"]
    assert segs["MSA"][0][6] == "101^Required field missing^HL70357"
    assert segs["ERR"][0][1] == "PID^1^3^101&Required field missing&HL70357"
    assert parse_ack(ack) == AckInfo(
        ack_code="AE",
        control_id_acked="ORM20240315000401",
        text="PID-3 patient identifier missing",
        error_code=101,
        message_control_id="TN000002",
    )


def test_ack_ae_251_has_err2_to_err8() -> None:
    ack = build_ack(
        ack_code="AE",
        control_id_in="OMI20240315000007",
        facility_in="GX-CO-0101",
        version="2.5.1",
        error=ErrorInfo(code=204, location="MSH-4", text="机构 GX-CO-0101 未登记 | unknown"),
        message_control_id="TN000003",
        now=NOW,
    )
    segs = segments(ack)
    err = segs["ERR"][0]
    assert (err[1], err[2], err[3], err[4], err[8]) == (
        "",
        "MSH^1^4",
        "204^Unknown key identifier^HL70357",
        "E",
        "机构 GX-CO-0101 未登记 \\F\\ unknown",
    )
    parsed = parse_message(ack.decode(), find_groups=False)
    assert parsed.msa.msa_2.to_er7() == "OMI20240315000007"
    info = parse_ack(ack)
    assert (info.ack_code, info.error_code, info.text) == ("AE", 204, "机构 GX-CO-0101 未登记 | unknown")


def test_ack_ar_for_unknown_control_id_and_unsupported_version() -> None:
    no_msh = parse_inbound(raw("broken/no_msh.hl7"))
    ack = build_ack_for(no_msh, message_control_id="TN000004", now=NOW)
    segs = segments(ack)
    assert segs["MSA"][0][1:3] == ["AR", ""]
    assert segs["MSH"][0][12] == "2.5.1"
    assert segs["ERR"][0][3] == "100^Segment sequence error^HL70357"
    wrong_version = parse_inbound(raw("broken/wrong_version.hl7"))
    ack = build_ack_for(wrong_version, message_control_id="TN000005", now=NOW)
    segs = segments(ack)
    assert segs["MSA"][0][1:3] == ["AR", "ORM20240315000301"]
    assert segs["ERR"][0][2:4] == ["MSH^1^12", "203^Unsupported version id^HL70357"]


def test_ack_in_inbound_charset() -> None:
    msg = parse_inbound(raw("orm_o01_gb18030.hl7"))
    ack = build_ack_for(
        msg, message_control_id="TN000006", now=NOW, ack_code="AE", error=ErrorInfo(207, None, "检查项目暂停")
    )
    with pytest.raises(UnicodeDecodeError):
        ack.decode("utf-8")
    segs = segments(ack, "gb18030")
    assert segs["MSH"][0][18] == "GB 18030-2000"
    assert segs["MSA"][0][3] == "检查项目暂停"
    assert parse_ack(ack).text == "检查项目暂停"


def test_ack_231_message_type_has_two_components() -> None:
    ack = build_ack_for(parse_inbound(raw("orm_o01_new_ecg.hl7")), message_control_id="TN7", now=NOW)
    assert segments(ack)["MSH"][0][9] == "ACK^O01"


# ----------------------------------------------------------------------------------------------- ORU


def _report(**overrides: object) -> ReportResult:
    values: dict[str, object] = {
        "accession_number": "GXTS0101-DX-20240315-0001",
        "patient": ZHANG_SAN,
        "procedure_code": "DX0001",
        "procedure_text": "胸部正位片",
        "findings": "双肺纹理增多，右下肺见斑片状模糊影。\n心影大小形态正常。",
        "impression": "右下肺炎 | 建议抗感染治疗后复查",
        "signer_name": "王五",
        "signer_id": "R0201",
        "signed_at": datetime(2024, 3, 15, 11, 2, 0, tzinfo=timezone(timedelta(hours=8))),
        "observed_at": datetime(2024, 3, 15, 9, 40, 0, tzinfo=timezone(timedelta(hours=8))),
        "modality": "DX",
    }
    values.update(overrides)
    return ReportResult(**values)  # type: ignore[arg-type]


def test_oru_round_trip_final() -> None:
    oru = build_oru(_report(), message_control_id="TNORU0001", receiving_facility="GX-TS-0101", now=NOW)
    parsed = hl7.parse(oru.decode("utf-8"))
    assert str(parsed.segment("MSH")[9]) == "ORU^R01^ORU_R01"
    assert str(parsed.segment("MSH")[18]) == "UNICODE UTF-8"
    pid = parsed.segment("PID")
    assert (str(pid[3]), str(pid[5]), str(pid[7]), str(pid[8])) == ("TS0101-000123", "张^三", "19650312", "M")
    orc, obr = parsed.segment("ORC"), parsed.segment("OBR")
    assert (str(orc[1]), str(orc[2])) == ("RE", "GXTS0101-DX-20240315-0001")
    assert str(obr[2]) == str(obr[3]) == "GXTS0101-DX-20240315-0001"
    assert str(obr[4]) == "DX0001^胸部正位片"
    assert (str(obr[7]), str(obr[22])) == ("20240315094000+0800", "20240315110200+0800")
    assert (str(obr[24]), str(obr[25]), str(obr[32])) == ("RAD", "F", "R0201&王五")
    obx = parsed.segments("OBX")
    assert [str(o[5]) for o in obx] == [
        "双肺纹理增多，右下肺见斑片状模糊影。",
        "心影大小形态正常。",
        "右下肺炎 \\F\\ 建议抗感染治疗后复查",
    ]
    assert {str(o[11]) for o in obx} == {"F"}
    assert all(str(o[8]) == "" for o in obx)

    tree = parse_message(oru.decode("utf-8"))  # with groups: the structure is a valid ORU_R01
    assert tree.name == "ORU_R01"
    result = tree.oru_r01_patient_result
    obr_apy = result.oru_r01_order_observation.obr
    assert obr_apy.obr_2.to_er7() == "GXTS0101-DX-20240315-0001"
    assert obr_apy.obr_25.to_er7() == "F"
    assert result.oru_r01_patient.pid.pid_5.to_er7() == "张^三"


def test_oru_names_the_study_the_worklist_and_the_images_share() -> None:
    uid = "2.25.123456789012345678901234567890"
    oru = build_oru(
        dataclasses.replace(_report(), study_instance_uid=uid),
        message_control_id="TNORU0009",
        receiving_facility="GX-TS-0101",
        now=NOW,
    )
    obx = hl7.parse(oru.decode("utf-8")).segments("OBX")
    assert [(str(o[2]), str(o[3]), str(o[5])) for o in obx][-1] == ("HD", "113014^DICOM Study^DCM", uid)
    plain = build_oru(_report(), message_control_id="TNORU0010", receiving_facility="GX-TS-0101", now=NOW)
    assert all(str(o[2]) != "HD" for o in hl7.parse(plain.decode("utf-8")).segments("OBX"))


def test_oru_critical_flags_impression_and_items() -> None:
    report = _report(
        impression="左侧大量气胸",
        critical=True,
        critical_items=["气胸（肺压缩约70%）"],
    )
    oru = build_oru(report, message_control_id="TNORU0002", receiving_facility="GX-TS-0101", now=NOW)
    obx = hl7.parse(oru.decode()).segments("OBX")
    flagged = [(str(o[3][0][0]), str(o[5]), str(o[8])) for o in obx if str(o[8])]
    assert flagged == [("IMPRESSION", "左侧大量气胸", "AA"), ("CRITICAL", "气胸（肺压缩约70%）", "AA")]


def test_oru_correction_with_addendum_and_ecg() -> None:
    report = _report(
        accession_number="GXTS0103-ECG-20240315-0012",
        procedure_code="ECG12",
        procedure_text="常规十二导联心电图",
        findings="窦性心律",
        impression="急性下壁心肌梗死",
        status="C",
        critical=True,
        addendum_text="补充：II、III、aVF导联ST段抬高。\n已电话通知申请医生。",
        ecg={"rate_bpm": 96, "pr_ms": 168, "qrs_ms": 92.0, "qt_ms": 360, "qtc_ms": 455.3, "axis_deg": -15},
        modality="ECG",
        placer_order_number="HIS-ECG-42",
    )
    oru = build_oru(report, message_control_id="TNORU0003", receiving_facility="GX-TS-0103", now=NOW)
    parsed = hl7.parse(oru.decode())
    obr = parsed.segment("OBR")
    assert (str(obr[2]), str(obr[3]), str(obr[24]), str(obr[25])) == (
        "HIS-ECG-42",
        "GXTS0103-ECG-20240315-0012",
        "EC",
        "C",
    )
    obx = parsed.segments("OBX")
    assert {str(o[11]) for o in obx} == {"C"}
    numeric = {str(o[3][0][0]): (str(o[5]), str(o[6][0][0])) for o in obx if str(o[2]) == "NM"}
    assert numeric == {
        "8867-4": ("96", "/min"),
        "8625-6": ("168", "ms"),
        "8633-0": ("92", "ms"),
        "8634-8": ("360", "ms"),
        "8636-3": ("455.3", "ms"),
        "8632-2": ("-15", "deg"),
    }
    addenda = [str(o[5]) for o in obx if str(o[3][0][0]) == "ADDENDUM"]
    assert addenda == ["补充：II、III、aVF导联ST段抬高。", "已电话通知申请医生。"]
    assert [str(o[1]) for o in obx] == [str(i) for i in range(1, len(obx) + 1)]


def test_oru_other_versions_and_bad_input() -> None:
    oru = build_oru(_report(), message_control_id="X", receiving_facility="F", now=NOW, version="2.3.1")
    assert segments(oru)["MSH"][0][9] == "ORU^R01"
    assert parse_message(oru.decode()).name == "ORU_R01"
    with pytest.raises(ValueError, match="status"):
        build_oru(_report(status="X"), message_control_id="X", receiving_facility="F", now=NOW)
    with pytest.raises(ValueError, match="ECG"):
        build_oru(_report(ecg={"hr": 60}), message_control_id="X", receiving_facility="F", now=NOW)


# ------------------------------------------------------------------------------------------ parse_ack


def test_parse_ack_from_python_hl7_peer() -> None:
    inbound = hl7.parse(text("adt_a04.hl7"))
    ack = str(inbound.create_ack("AA", message_id="HISACK1", application="HIS", facility="GX-TS-0101"))
    assert parse_ack(ack.encode()) == AckInfo("AA", "ADT20240315000001", None, None, "HISACK1")


@pytest.mark.parametrize("version", ["2.3.1", "2.4", "2.5", "2.5.1"])
def test_parse_ack_versions_and_lf(version: str) -> None:
    ack = (
        f"MSH|^~\\&|HIS|GX-TS-0101|TELENET|TELENET|20240315103000||ACK|H1|P|{version}\nMSA|AR|TNORU0001|病人不存在\n"
    ).encode()
    assert parse_ack(ack) == AckInfo("AR", "TNORU0001", "病人不存在", None, "H1")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        b"MSH|^~\\&|HIS|GX|||20240315||ACK|1|P|2.4\r",
        b"MSH|^~\\&|H|G|||2024||ACK|1|P|2.4\rMSA|OK|1\r",
    ],
)
def test_parse_ack_rejects_non_acks(data: bytes) -> None:
    with pytest.raises(InvalidAck):
        parse_ack(data)


def test_runs_in_a_process_pool() -> None:
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        parsed = pool.submit(parse_inbound, raw("omi_o23_new_ct_251.hl7")).result(timeout=60)
        oru = pool.submit(
            build_oru, _report(), message_control_id="P1", receiving_facility="GX-TS-0101", now=NOW
        ).result(timeout=60)
    assert parsed == parse_inbound(raw("omi_o23_new_ct_251.hl7"))
    assert "右下肺炎".encode() in oru
