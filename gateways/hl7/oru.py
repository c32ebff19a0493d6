"""ORU^R01: a signed report (or addendum) back to the requesting HIS, built with hl7apy."""

from __future__ import annotations

from datetime import datetime

from gateways.hl7.er7 import (
    DEFAULT_VERSION,
    SUPPORTED_VERSIONS,
    escape,
    format_ts,
    new_message,
    outbound_charset,
    set_field,
    version_tuple,
)
from gateways.hl7.messages import ReportResult

_SECTION = "99TLN"  # local coding system for report sections
_ECG_OBSERVATIONS: dict[str, tuple[str, str, str, str]] = {
    # key: (LOINC code, name, UCUM unit, coding system)
    "rate_bpm": ("8867-4", "Heart rate", "/min", "LN"),
    "pr_ms": ("8625-6", "P-R Interval", "ms", "LN"),
    "qrs_ms": ("8633-0", "QRS duration", "ms", "LN"),
    "qt_ms": ("8634-8", "Q-T Interval", "ms", "LN"),
    "qtc_ms": ("8636-3", "Q-T Interval Corrected", "ms", "LN"),
    "axis_deg": ("8632-2", "QRS axis", "deg", "LN"),
}
_DIAGNOSTIC_SECTION = {"ECG": "EC", "CT": "CT", "MR": "MR", "US": "US", "NM": "NMS"}


def _text_lines(value: str | None) -> list[str]:
    return [line.strip() for line in (value or "").splitlines() if line.strip()]


def _cnn_of_person_name(name: str) -> str:
    """A DICOM person name (``Family^Given^Middle^Prefix^Suffix``) as the name part of a CNN (no ID):
    ``&Family&Given&Middle&Suffix&Prefix``."""
    parts = [escape(p) for p in (name.split("=")[0].split("^") + [""] * 5)[:5]]
    family, given, middle, prefix, suffix = parts
    return "&" + "&".join((family, given, middle, suffix, prefix)).rstrip("&")


def build_oru(
    result: ReportResult,
    *,
    message_control_id: str,
    sending_facility: str = "TELENET",
    receiving_facility: str,
    now: datetime,
    version: str = DEFAULT_VERSION,
    sending_application: str = "TELENET",
    receiving_application: str | None = None,
    charset: str = "utf-8",
) -> bytes:
    """ORU^R01 in ``charset`` (a Python codec: the destination's registered set; MSH-18 says which): one
    OBX (TX) per line of findings, impression, critical items and addendum,
    one OBX (NM) per ECG measurement. OBR-25/OBX-11 carry the status (P: a critical finding sent when found),
    OBX-8 ``AA`` marks critical. OBR-32 is the signer (审核医师, principal result interpreter), OBR-33 the
    author of the preliminary (报告医师, assistant result interpreter) when that is someone else, OBR-34 the
    technician (技师) the images name in OperatorsName; ORC-12 and
    OBR-16 echo the ordering clinician; in a report (F, C) a last OBX (HD, ``113014^DICOM Study^DCM``) names
    the Study Instance UID that the worklist, the images and the MPPS share."""
    if result.status not in ("F", "C", "P"):
        raise ValueError(f"status must be F, C or P, not {result.status!r}")
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"HL7 version {version} not supported")
    unknown = set(result.ecg or {}) - set(_ECG_OBSERVATIONS) - {"rhythm"}
    if unknown:
        raise ValueError(f"unknown ECG measurements: {sorted(unknown)}")
    msh_9 = "ORU^R01^ORU_R01" if version_tuple(version) >= (2, 4) else "ORU^R01"
    codec, msh_18 = outbound_charset(charset)
    m = new_message("ORU_R01", version, {
        3: escape(sending_application), 4: escape(sending_facility),
        5: escape(receiving_application or ""), 6: escape(receiving_facility), 7: format_ts(now),
        9: msh_9, 10: escape(message_control_id), 11: "P", 17: "CHN", 18: msh_18,
    })  # fmt: skip
    result_group = m.add_group("ORU_R01_PATIENT_RESULT")
    pid = result_group.add_group("ORU_R01_PATIENT").add_segment("PID")
    p = result.patient
    set_field(pid, 1, "1")
    set_field(pid, 3, escape(p.id))
    name = f"{escape(p.family)}^{escape(p.given)}".rstrip("^") if p.family or p.given else escape(p.display)
    set_field(pid, 5, name)
    set_field(pid, 7, p.birth_date.strftime("%Y%m%d") if p.birth_date else None)
    set_field(pid, 8, p.sex)
    order = result_group.add_group("ORU_R01_ORDER_OBSERVATION")
    placer = escape(result.placer_order_number or result.accession_number)
    accession = escape(result.accession_number)
    orc, obr = order.add_segment("ORC"), order.add_segment("OBR")
    ordering = result.ordering_clinician
    ordering_xcn = f"{escape(ordering.id or '')}^{escape(ordering.name)}" if ordering else None
    for n, value in ((1, "RE"), (2, placer), (3, accession), (5, "IP" if result.status == "P" else "CM")):
        set_field(orc, n, value)
    if ordering_xcn:
        set_field(orc, 12, ordering_xcn)
    procedure = f"{escape(result.procedure_code)}^{escape(result.procedure_text)}"
    signer = f"{escape(result.signer_id)}&{escape(result.signer_name)}"
    assistant = (
        f"{escape(result.assistant_id or '')}&{escape(result.assistant_name)}"
        if result.assistant_name and result.assistant_id != result.signer_id
        else None
    )
    technician = _cnn_of_person_name(result.technician_name) if result.technician_name else None
    observed = format_ts(result.observed_at) if result.observed_at else None
    section = _DIAGNOSTIC_SECTION.get(result.modality or "", "RAD" if result.modality else "")
    for n, obr_value in (
        (1, "1"), (2, placer), (3, accession), (4, procedure), (7, observed),
        (16, ordering_xcn), (22, format_ts(result.signed_at)), (24, section), (25, result.status),
        (32, signer), (33, assistant), (34, technician),
    ):  # fmt: skip
        set_field(obr, n, obr_value)

    obx_rows: list[tuple[str, str, str, str, str | None]] = []  # type, OBX-3, value, units, flag
    critical_flag = "AA" if result.critical else None
    for code, name, text, flag in (
        ("FINDINGS", "检查所见", result.findings, None),
        ("IMPRESSION", "诊断意见", result.impression, critical_flag),
    ):
        for line in _text_lines(text):
            obx_rows.append(("TX", f"{code}^{name}^{_SECTION}", escape(line), "", flag))
    if result.critical:
        for item in result.critical_items:
            obx_rows.append(("TX", f"CRITICAL^危急值^{_SECTION}", escape(item), "", "AA"))
    ecg = result.ecg or {}
    if ecg.get("rhythm"):
        obx_rows.append(("TX", f"RHYTHM^心律^{_SECTION}", escape(str(ecg["rhythm"])), "", None))
    for key, (code, name, unit, system) in _ECG_OBSERVATIONS.items():
        measured = ecg.get(key)
        if measured is not None:
            obx_rows.append(("NM", f"{code}^{name}^{system}", f"{measured:g}", f"{unit}^{unit}^UCUM", None))
    for line in _text_lines(result.addendum_text):
        obx_rows.append(("TX", f"ADDENDUM^补充报告^{_SECTION}", escape(line), "", None))
    # The study the report reads (DCM 113014), as on the worklist and the images; a critical finding sent when
    # found (P) carries its items only.
    if result.study_instance_uid and result.status != "P":
        obx_rows.append(("HD", "113014^DICOM Study^DCM", escape(result.study_instance_uid), "", None))

    for i, (value_type, ident, value, units, flag) in enumerate(obx_rows, start=1):
        obx = order.add_group("ORU_R01_OBSERVATION").add_segment("OBX")
        for n, v in (
            (1, str(i)), (2, value_type), (3, ident), (5, value), (6, units), (8, flag),
            (11, result.status), (14, observed),
        ):  # fmt: skip
            set_field(obx, n, v)
    return (str(m.to_er7()) + "\r").encode(codec)
