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
from datetime import datetime
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
    ChangeOrder,
    Clinician,
    Consent,
    DiscontinueOrder,
    ErrorInfo,
    Inbound,
    InvalidAck,
    Kind,
    MergePatient,
    NewOrder,
    Order,
    OrderGroups,
    PatientData,
    PatientUpdate,
    Priority,
    Rejected,
    ReportResult,
)
from gateways.hl7.oru import build_oru

log = logging.getLogger(__name__)

_ADT_EVENTS = {"A01", "A04", "A05", "A08", "A40"}
#: PID-3 identifier types (table 0203) in order of preference for the HIS patient id.
_ID_TYPES = ("PI", "MR", "PT", "PN", "AN")
_ORDER_TYPES = {("ORM", "O01"), ("OMI", "O23"), ("OMG", "O19")}

_DICOM_MODALITIES = "CR DX CT MR US MG XA RF NM PT IO PX OT ES XC OP".split()
_MODALITY_CODES: dict[str, str] = {m: m for m in _DICOM_MODALITIES}
_MODALITY_CODES.update(
    {"DR": "DX", "ECG": "ECG", "EC": "ECG", "EKG": "ECG", "NMR": "MR", "OUS": "US", "VUS": "US"}
    | {"CUS": "US", "NMS": "NM", "XRC": "XA", "RAD": "", "RX": ""}  # "" = radiology, modality unknown
)
#: OBR-4 service code of a remote consultation (远程会诊), coding system 99TLN: CONSULT, or CONSULT-<subspecialty>.
_CONSULTATION = re.compile(r"CONSULT(?:-([A-Z][A-Z0-9_]{0,31}))?")
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
        if code in ("ADT", "ORM", "OMI", "OMG"):
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
    if code == "ADT" and event == "A40":
        return MergePatient(patient=_patient(segs), prior_id=_prior_id(segs), **common)
    if code == "ADT":
        return PatientUpdate(patient=_patient(segs), **common)
    return _orders(segs, code, common)


def _patient(segs: list[Segment]) -> PatientData:
    pid = first(segs, "PID")
    if pid is None:
        raise Reject("AE", 100, "PID", "PID segment missing")
    patient_id, national_id, identifiers = _identifiers(pid, 3)
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
        identifiers=identifiers,
    )


def _identifiers(seg: Segment, n: int) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    """(HIS patient id, national id, typed identifiers) of a CX list (PID-3, MRG-1): the national id is
    type NNCHN (or NN assigned by CHN); the HIS id is the first PI, else MR, ..., else the first untyped."""
    national_id, typed, untyped = "", [], []
    for rep in range(seg.reps(n)):
        value, kind = seg.get(n, 1, rep=rep), seg.get(n, 5, rep=rep).upper()
        if not value:
            continue
        if kind == "NNCHN" or (kind == "NN" and seg.get(n, 4, rep=rep).upper() == "CHN"):
            national_id = national_id or value
        elif kind:
            typed.append((kind, value))
        else:
            untyped.append(value)
    by_type = dict(reversed(typed))
    patient_id = next((by_type[t] for t in _ID_TYPES if t in by_type), "") or (untyped or [""])[0]
    patient_id = patient_id or (typed[0][1] if typed else "")
    return patient_id, national_id, tuple(dict.fromkeys(typed))


def _prior_id(segs: list[Segment]) -> str:
    mrg = first(segs, "MRG")
    if mrg is None:
        raise Reject("AE", 100, "MRG", "MRG segment missing (ADT^A40 names the merged patient id in MRG-1)")
    prior, _, _ = _identifiers(mrg, 1)
    if not prior:
        raise Reject("AE", 101, "MRG-1", "MRG-1 prior patient identifier missing")
    return prior


def _clinician(seg: Segment | None, n: int) -> Clinician | None:
    if seg is None:
        return None
    ident, name = seg.get(n, 1), display_name(seg.get(n, 2), seg.get(n, 3))
    return Clinician(id=ident or None, name=name) if ident or name else None


def _orders(segs: list[Segment], code: str, common: dict[str, Any]) -> Order | OrderGroups:
    """One ORC group: its order; several: all of them (applied together), group n's errors located in it."""
    starts = [i for i, s in enumerate(segs) if s.name == "ORC"]
    if not starts:
        raise Reject("AE", 100, "ORC", "ORC segment missing")
    shared = segs[: starts[0]]
    groups = [segs[a:b] for a, b in zip(starts, [*starts[1:], len(segs)], strict=True)]
    if len(groups) == 1:
        return _order(shared, groups[0], segs, code, common)
    orders = []
    for n, group in enumerate(groups, start=1):
        try:
            orders.append(_order(shared, group, segs, code, common))
        except Reject as r:
            raise Reject(r.ack_code, r.code, in_group(r.location, n, shared), f"order group {n}: {r.reason}") from None
    return OrderGroups(orders=tuple(orders), **common)


def in_group(location: str | None, n: int, shared: list[Segment] | None = None) -> str:
    """``OBR-24`` of group n as ``OBR[n]-24`` (ERR-2 then says OBR^n^24); segments before the first ORC
    (PID) are not repeated per group."""
    if not location:
        return f"ORC[{n}]"
    name, sep, rest = location.partition("-")
    if "[" in name or (shared is not None and any(s.name == name for s in shared)) or name in ("PID", "MSH"):
        return location
    return f"{name}[{n}]{sep}{rest}"


def _order(
    shared: list[Segment], group: list[Segment], segs: list[Segment], code: str, common: dict[str, Any]
) -> Order:
    orc, obr = group[0], first(group, "OBR")
    ipc = first(group, "IPC") if code == "OMI" else None
    placer = orc.get(2) or (obr.get(2) if obr else "")
    filler = orc.get(3) or (obr.get(3) if obr else "")
    accession = (ipc.get(1) if ipc else "") or placer or filler
    control = orc.get(1).upper()
    if control in ("CA", "XO", "DC") and not accession:
        raise Reject("AE", 101, "ORC-2", "ORC-2 placer order number (accession) missing")
    if control == "CA":
        try:
            patient: PatientData | None = _patient(shared or segs)
        except Reject:
            patient = None  # a cancel needs only the accession number
        return CancelOrder(accession_number=accession, patient=patient, **common)
    if control == "XO":
        return _change(orc, obr, first(group, "TQ1"), accession, common)
    if control == "DC":
        reason = orc.get(16, 2) or orc.get(16, 1) or None
        return DiscontinueOrder(accession_number=accession, reason=reason, **common)
    if control != "NW":
        raise Reject("AE", 103, "ORC-1", f"order control {control!r} not supported (NW, CA, XO, DC)")
    patient = _patient(shared or segs)
    if obr is None:
        raise Reject("AE", 100, "OBR", "OBR segment missing")
    if not accession:
        raise Reject("AE", 101, "ORC-2", "ORC-2 placer order number (accession) missing")
    procedure_code, procedure_text = obr.get(4, 1), obr.get(4, 2)
    if not procedure_code and not procedure_text:
        raise Reject("AE", 101, "OBR-4", "OBR-4 universal service identifier missing")
    consult = _CONSULTATION.fullmatch(procedure_code.upper())
    if consult is not None:
        return NewOrder(
            patient=patient,
            accession_number=accession,
            kind="consultation",
            modality=None,
            procedure_code=procedure_code,
            procedure_text=procedure_text,
            body_part=None,
            priority=_priority(first(group, "TQ1"), obr, orc) or "routine",
            clinical_question=_clinical_question(obr),
            ordering_clinician=_clinician(orc, 12) or _clinician(obr, 16),
            consent=_consent(first(group, "CON") or first(segs, "CON"), patient),
            placer_order_number=placer or None,
            filler_order_number=filler or None,
            subspecialty=(consult.group(1) or "").lower() or None,
            scheduled_at=_wished_time(first(group, "TQ1"), obr, orc),
            **common,
        )
    modality = _modality(obr, ipc)
    return NewOrder(
        patient=patient,
        accession_number=accession,
        kind="ecg" if modality == "ECG" else "imaging",
        modality=modality,
        procedure_code=procedure_code,
        procedure_text=procedure_text,
        body_part=_body_part(obr) or (None if modality == "ECG" else procedure_text or None),
        priority=_priority(first(group, "TQ1"), obr, orc) or "routine",
        clinical_question=_clinical_question(obr),
        ordering_clinician=_clinician(orc, 12) or _clinician(obr, 16),
        consent=_consent(first(group, "CON") or first(segs, "CON"), patient),
        placer_order_number=placer or None,
        filler_order_number=filler or None,
        study_instance_uid=_study_uid(ipc),
        **common,
    )


def _study_uid(ipc: Segment | None) -> str | None:
    value = ipc.get(3) if ipc is not None else ""
    if not value:
        return None
    if len(value) > 64 or not re.fullmatch(r"[0-9]+(\.[0-9]+)*", value):
        raise Reject("AE", 102, "IPC-3", f"IPC-3 {value[:70]!r} is not a DICOM UID")
    return value


def _wished_time(tq1: Segment | None, obr: Segment | None, orc: Segment) -> datetime | None:
    """The wished (scheduled) time: TQ1-7 start date/time, else OBR-27.4, else ORC-7.4 (TQ)."""
    for location, seg, n, comp in (("TQ1-7", tq1, 7, 1), ("OBR-27", obr, 27, 4), ("ORC-7", orc, 7, 4)):
        if seg is not None and seg.get(n, comp):
            return parse_ts(seg.get(n, comp), location)
    return None


def _change(orc: Segment, obr: Segment | None, tq1: Segment | None, accession: str, common: dict[str, Any]) -> Order:
    scheduled = _wished_time(tq1, obr, orc)
    change = ChangeOrder(
        accession_number=accession,
        priority=_priority(tq1, obr, orc) if obr is not None else _priority(tq1, orc, orc),
        clinical_question=_clinical_question(obr) if obr is not None else None,
        scheduled_at=scheduled,
        body_part=_body_part(obr) if obr is not None else None,
        **common,
    )
    if not (change.priority or change.clinical_question or change.scheduled_at or change.body_part):
        raise Reject("AE", 101, "OBR", "ORC-1 XO changes nothing: send priority, OBR-13/31, TQ1-7 or OBR-15")
    return change


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


def _priority(tq1: Segment | None, obr: Segment, orc: Segment) -> Priority | None:
    for value in (tq1.get(9) if tq1 else "", obr.get(27, 6), orc.get(7, 6)):
        if value:
            return _PRIORITIES.get(value.upper(), "routine")
    return None


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
    "ChangeOrder",
    "Clinician",
    "Consent",
    "DiscontinueOrder",
    "ErrorInfo",
    "Inbound",
    "InvalidAck",
    "Kind",
    "MergePatient",
    "NewOrder",
    "Order",
    "OrderGroups",
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
