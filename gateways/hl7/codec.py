"""HL7 v2 inbound mapping with hl7apy, and the codec's public face.

``parse_inbound`` turns an MLLP payload into a plain dataclass (:mod:`gateways.hl7.messages`); the ACK
(:mod:`gateways.hl7.ack`) and ORU^R01 (:mod:`gateways.hl7.oru`) builders are re-exported here, so callers
import one module. Pure and picklable (bytes, str and frozen dataclasses in and out; no sockets, no
database) so the server can run it in a process pool: hl7apy is CPU-bound. Inbound problems never raise:
they come back as :class:`Rejected` with the ACK code, the table 0357 error code and the field to blame.

Which field carries what, in order of preference, is the field map in ``docs/hl7-interface.md``; ER7
details (character sets, escapes, timestamps) are in :mod:`gateways.hl7.er7`.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from gateways.hl7.ack import build_ack, build_ack_for, parse_ack
from gateways.hl7.er7 import (
    DEFAULT_VERSION,
    ERROR_CODES,
    SUPPORTED_VERSIONS,
    Header,
    Reject,
    Segment,
    decode,
    display_name,
    first,
    header_from_line,
    parse_date,
    parse_segments,
    parse_ts,
    sniff,
    split_lines,
)
from gateways.hl7.messages import (
    AckCode,
    AckInfo,
    CancelOrder,
    Clinician,
    Consent,
    ErrorInfo,
    Inbound,
    InvalidAck,
    Kind,
    NewOrder,
    PatientData,
    PatientUpdate,
    Priority,
    Rejected,
    ReportResult,
)
from gateways.hl7.oru import build_oru

log = logging.getLogger(__name__)

_ADT_EVENTS = {"A04", "A08"}
_ORDER_TYPES = {("ORM", "O01"), ("OMI", "O23")}

_DICOM_MODALITIES = "CR DX CT MR US MG XA RF NM PT IO PX OT ES XC OP".split()
_MODALITY_CODES: dict[str, str] = {m: m for m in _DICOM_MODALITIES}
_MODALITY_CODES.update(
    {"DR": "DX", "ECG": "ECG", "EC": "ECG", "EKG": "ECG", "NMR": "MR", "OUS": "US", "VUS": "US"}
    | {"CUS": "US", "NMS": "NM", "XRC": "XA", "RAD": "", "RX": ""}  # "" = radiology, modality unknown
)
_MODALITY_PREFIX = re.compile(r"(ECG|EKG|CR|DX|DR|CT|MR|US|MG|XA|RF|NM|PT)(?![A-Z])")
_PRIORITIES: dict[str, Priority] = {"S": "stat", "STAT": "stat", "A": "urgent", "ASAP": "urgent"}
_PRIORITIES |= {"U": "urgent", "URGENT": "urgent"}
_SEXES = {"M": "M", "F": "F", "O": "O", "U": "U", "A": "O", "N": "U", "1": "M", "2": "F", "0": "U", "9": "U"}


def parse_inbound(raw: bytes, default_charset: str | None = None) -> Inbound:
    """Map one inbound message (an MLLP payload) to a dataclass; never raises. ``default_charset`` (a Python
    codec) reads a message without MSH-18."""
    head = sniff(raw)
    text: str | None = None
    try:
        text, charset = decode(raw, default_charset)
        head = header_from_line(split_lines(text)[0], charset)
        return _map(text, head, charset)
    except Reject as r:
        return Rejected(
            ack_code=r.ack_code,
            reason=r.reason,
            error_location=r.location,
            message_control_id=head.message_control_id,
            facility=head.facility,
            version=head.version,
            raw_text=text,
            error_code=r.code,
            message_type=head.message_type,
            sending_application=head.sending_application,
            charset=head.charset,
        )
    except Exception as exc:
        log.exception("hl7: internal error mapping message %s", head.message_control_id)
        return Rejected(
            "AE", f"internal error: {type(exc).__name__}", None, head.message_control_id, head.facility,
            head.version, text, 207, head.message_type, head.sending_application, head.charset,
        )  # fmt: skip


def _map(text: str, head: Header, charset: str) -> Inbound:
    code, _, event = (head.message_type or "").partition("^")
    version = head.version or ""
    if not code:
        raise Reject("AR", 101, "MSH-9", "MSH-9 message type missing")
    if not version:
        raise Reject("AR", 101, "MSH-12", "MSH-12 version id missing")
    if version not in SUPPORTED_VERSIONS:
        raise Reject("AR", 203, "MSH-12", f"HL7 version {version} not supported ({', '.join(SUPPORTED_VERSIONS)})")
    if not ((code == "ADT" and event in _ADT_EVENTS) or (code, event) in _ORDER_TYPES):
        if code in ("ADT", "ORM", "OMI"):
            raise Reject("AR", 201, "MSH-9", f"event {head.message_type} not supported")
        raise Reject("AR", 200, "MSH-9", f"message type {head.message_type} not supported")
    segs = parse_segments(text, version, charset)
    if not head.message_control_id:
        raise Reject("AE", 101, "MSH-10", "MSH-10 message control id missing")
    if not head.facility:
        raise Reject("AE", 101, "MSH-4", "MSH-4 sending facility missing")
    common = {
        "facility": head.facility,
        "message_control_id": head.message_control_id,
        "version": version,
        "message_type": f"{code}^{event}",
        "sending_application": head.sending_application or "",
        "charset": charset,
    }
    if code == "ADT":
        return PatientUpdate(patient=_patient(segs), **common)
    return _order(segs, code, common)


def _patient(segs: list[Segment]) -> PatientData:
    pid = first(segs, "PID")
    if pid is None:
        raise Reject("AE", 100, "PID", "PID segment missing")
    patient_id = national_id = ""
    for rep in range(pid.reps(3)):
        value = pid.get(3, 1, rep=rep)
        if pid.get(3, 5, rep=rep).upper() == "NNCHN":
            national_id = national_id or value
        elif value and not patient_id:
            patient_id = value
    if not patient_id:
        raise Reject("AE", 101, "PID-3", "PID-3 patient identifier missing")
    family, given = pid.get(5, 1), pid.get(5, 2)
    if not family and not given:
        raise Reject("AE", 101, "PID-5", "PID-5 patient name missing")
    return PatientData(
        id=patient_id,
        family=family,
        given=given,
        display=display_name(family, given),
        sex=_SEXES.get(pid.get(8).upper(), "U"),
        birth_date=parse_date(pid.get(7), "PID-7"),
        national_id=national_id or pid.get(19) or None,
    )


def _clinician(seg: Segment | None, n: int) -> Clinician | None:
    if seg is None:
        return None
    ident, name = seg.get(n, 1), display_name(seg.get(n, 2), seg.get(n, 3))
    return Clinician(id=ident or None, name=name) if ident or name else None


def _order(segs: list[Segment], code: str, common: dict[str, Any]) -> NewOrder | CancelOrder:
    orcs = [s for s in segs if s.name == "ORC"]
    if not orcs:
        raise Reject("AE", 100, "ORC", "ORC segment missing")
    if len(orcs) > 1:
        raise Reject("AE", 100, "ORC", f"{len(orcs)} orders in one message; send one ORC per message")
    orc, obr = orcs[0], first(segs, "OBR")
    ipc = first(segs, "IPC") if code == "OMI" else None
    placer = orc.get(2) or (obr.get(2) if obr else "")
    filler = orc.get(3) or (obr.get(3) if obr else "")
    accession = (ipc.get(1) if ipc else "") or placer or filler
    control = orc.get(1).upper()
    if control == "CA":
        if not accession:
            raise Reject("AE", 101, "ORC-2", "ORC-2 placer order number (accession) missing")
        try:
            patient: PatientData | None = _patient(segs)
        except Reject:
            patient = None  # a cancel needs only the accession number
        return CancelOrder(accession_number=accession, patient=patient, **common)
    if control != "NW":
        raise Reject("AE", 103, "ORC-1", f"order control {control!r} not supported (NW, CA)")
    patient = _patient(segs)
    if obr is None:
        raise Reject("AE", 100, "OBR", "OBR segment missing")
    if not accession:
        raise Reject("AE", 101, "ORC-2", "ORC-2 placer order number (accession) missing")
    procedure_code, procedure_text = obr.get(4, 1), obr.get(4, 2)
    if not procedure_code and not procedure_text:
        raise Reject("AE", 101, "OBR-4", "OBR-4 universal service identifier missing")
    modality = _modality(obr, ipc)
    return NewOrder(
        patient=patient,
        accession_number=accession,
        kind="ecg" if modality == "ECG" else "imaging",
        modality=modality,
        procedure_code=procedure_code,
        procedure_text=procedure_text,
        body_part=_body_part(obr) or (None if modality == "ECG" else procedure_text or None),
        priority=_priority(first(segs, "TQ1"), obr, orc),
        clinical_question=_clinical_question(obr),
        ordering_clinician=_clinician(orc, 12) or _clinician(obr, 16),
        consent=_consent(first(segs, "CON"), patient),
        placer_order_number=placer or None,
        filler_order_number=filler or None,
        **common,
    )


def _modality(obr: Segment, ipc: Segment | None) -> str:
    radiology = False
    for location, seg, n in (("IPC-5", ipc, 5), ("OBR-24", obr, 24)):
        value = seg.get(n).upper() if seg is not None else ""
        if not value:
            continue
        modality = _MODALITY_CODES.get(value)
        if modality is None:
            raise Reject("AE", 103, location, f"{location} {value!r} is not a known modality")
        if modality:
            return modality
        radiology = True
    m = _MODALITY_PREFIX.match(obr.get(4, 1).upper())
    if m:
        return _MODALITY_CODES[m.group(1)]
    if radiology:
        return "DX"
    raise Reject("AE", 101, "OBR-24", "modality unknown: send OBR-24 (diagnostic service section) or IPC-5")


def _body_part(obr: Segment) -> str | None:
    for comp, sub in ((4, 1), (4, 2), (1, 1), (1, 2)):
        value = obr.get(15, comp, sub)
        if value:
            return value
    return None


def _priority(tq1: Segment | None, obr: Segment, orc: Segment) -> Priority:
    for value in (tq1.get(9) if tq1 else "", obr.get(27, 6), orc.get(7, 6)):
        if value:
            return _PRIORITIES.get(value.upper(), "routine")
    return "routine"


def _clinical_question(obr: Segment) -> str | None:
    if obr.get(13):
        return obr.get(13)
    reasons = [obr.get(31, 2, rep=r) or obr.get(31, 1, rep=r) for r in range(obr.reps(31))]
    return "; ".join(r for r in reasons if r) or None


def _consent(con: Segment | None, patient: PatientData) -> Consent | None:
    if con is None:
        return None
    given_at = None
    for n in (13, 12, 14):
        given_at = parse_ts(con.get(n), f"CON-{n}")
        if given_at is not None:
            break
    status = con.get(11).upper() or None
    return Consent(
        given_by=display_name(con.get(24, 1), con.get(24, 2)) or patient.display,
        given_at=given_at,
        relationship=con.get(25) or None,
        mode=con.get(10).upper() or None,
        status=status,
        granted=status not in ("R", "X", "B"),
    )


__all__ = [
    "DEFAULT_VERSION",
    "ERROR_CODES",
    "SUPPORTED_VERSIONS",
    "AckCode",
    "AckInfo",
    "CancelOrder",
    "Clinician",
    "Consent",
    "ErrorInfo",
    "Inbound",
    "InvalidAck",
    "Kind",
    "NewOrder",
    "PatientData",
    "PatientUpdate",
    "Priority",
    "Rejected",
    "ReportResult",
    "build_ack",
    "build_ack_for",
    "build_oru",
    "parse_ack",
    "parse_inbound",
]
