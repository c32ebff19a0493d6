"""Between HL7 and the service layer, both ways, pure: a parsed message becomes an
:class:`~telenet.services.hl7_inbound.InboundCommand`, a service error becomes the ERR of an AE (the one
place ``TelenetError`` is mapped to HL7), and an outbox payload becomes the :class:`ReportResult` of an
ORU^R01.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

from gateways.hl7.codec import in_group
from gateways.hl7.messages import (
    CancelOrder,
    ChangeOrder,
    Clinician,
    DiscontinueOrder,
    ErrorInfo,
    Inbound,
    MergePatient,
    NewOrder,
    Order,
    OrderGroups,
    PatientData,
    PatientUpdate,
    Rejected,
    ReportResult,
)
from telenet.domain.errors import Conflict, Forbidden, Invalid, NotFound, TelenetError
from telenet.domain.patients import is_masked_national_id
from telenet.services.hl7_inbound import GroupFailed, InboundCommand

#: HL7 times without an offset are the HIS's local time, China Standard Time; times we send carry +0800.
HIS_TIMEZONE = timezone(timedelta(hours=8))

# --------------------------------------------------------------------------------------------------- inbound


def refusal(message: Inbound) -> ErrorInfo | None:
    """Why the gateway itself refuses a message: the codec rejected it, or its CON segment refuses or
    rescinds consent (that is an AE of its own, not a missing consent)."""
    if isinstance(message, Rejected):
        return message.error
    if isinstance(message, NewOrder) and message.consent is not None and not message.consent.granted:
        return ErrorInfo(103, "CON-11", f"consent status {message.consent.status}: refused, rescinded or bypassed")
    if isinstance(message, OrderGroups):
        for n, order in enumerate(message.orders, start=1):
            error = refusal(order)
            if error is not None:
                return ErrorInfo(error.code, in_group(error.location, n), f"order group {n}: {error.text}")
    return None


def command_for(message: Inbound, *, discontinue_policy: str = "return") -> InboundCommand:
    """The service command of a message that has a facility and a control id; a refused one is only logged."""
    facility, control_id = message.facility or "", message.message_control_id or ""
    message_type = message.message_type or ""
    if isinstance(message, Rejected) or refusal(message) is not None:
        return InboundCommand(facility, control_id, message_type, "refuse")
    if isinstance(message, PatientUpdate):
        return InboundCommand(facility, control_id, message_type, "patient", patient=patient_data(message.patient))
    if isinstance(message, MergePatient):
        return InboundCommand(
            facility, control_id, message_type, "merge", patient=patient_data(message.patient),
            changes={"prior_id": message.prior_id},
        )  # fmt: skip
    if isinstance(message, OrderGroups):
        parts = tuple(
            _order_command(order, control_id if n == 0 else f"{control_id}#{_accession(order)}", discontinue_policy)
            for n, order in enumerate(message.orders)
        )
        return InboundCommand(facility, control_id, message_type, "orders", parts=parts)
    if isinstance(message, Order):
        return _order_command(message, control_id, discontinue_policy)
    raise TypeError(f"no command for {type(message).__name__}")


def _accession(order: Order) -> str:
    return order.accession_number


def _order_command(order: Order, control_id: str, discontinue_policy: str) -> InboundCommand:
    facility, message_type, accession = order.facility, order.message_type, order.accession_number
    if isinstance(order, CancelOrder):
        return InboundCommand(facility, control_id, message_type, "cancel", accession_number=accession)
    if isinstance(order, ChangeOrder):
        changes = {
            "priority": order.priority,
            "clinical_question": order.clinical_question,
            "scheduled_at": _aware(order.scheduled_at) if order.scheduled_at else None,
            "body_part": order.body_part,
        }
        return InboundCommand(facility, control_id, message_type, "change", accession_number=accession, changes=changes)
    if isinstance(order, DiscontinueOrder):
        changes = {"reason": order.reason, "policy": discontinue_policy}
        return InboundCommand(
            facility, control_id, message_type, "discontinue", accession_number=accession, changes=changes
        )
    return InboundCommand(
        facility,
        control_id,
        message_type,
        "order",
        order=order_body(order),
        accession_number=accession,
        order_info=order_info(order),
        placer_order_number=order.placer_order_number,
        filler_order_number=order.filler_order_number,
        study_instance_uid=order.study_instance_uid,
    )


def patient_data(patient: PatientData) -> dict[str, Any]:
    """The patient as ``POST /api/v1/requests`` and ADT upserts take it (display name: 张三, not 张^三)."""
    data: dict[str, Any] = {"id": patient.id, "name": patient.display, "sex": patient.sex}
    if patient.birth_date is not None:
        data["birth_date"] = patient.birth_date.isoformat()
    # A dead letter keeps the id masked (*****************X); replayed, the message carries no id.
    if patient.national_id and not is_masked_national_id(patient.national_id):
        data["national_id"] = patient.national_id
    if patient.identifiers:
        data["identifiers"] = dict(patient.identifiers)
    return data


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=HIS_TIMEZONE)


def order_body(order: NewOrder) -> dict[str, Any]:
    """A NW order as the body of ``POST /api/v1/requests``; consent only when granted and dated."""
    body: dict[str, Any] = {
        "kind": order.kind,
        "priority": order.priority,
        "patient": patient_data(order.patient),
        "accession_number": order.accession_number,
    }
    if order.modality is not None:
        body["modality"] = order.modality
    if order.subspecialty:
        body["subspecialty"] = order.subspecialty
    if order.scheduled_at is not None:
        body["scheduled_at"] = _aware(order.scheduled_at).isoformat()
    if order.clinical_question:
        body["clinical_question"] = order.clinical_question
    if order.body_part:
        body["body_part"] = order.body_part
    if order.ordering_clinician and order.ordering_clinician.name:
        clinician = {"name": order.ordering_clinician.name}
        if order.ordering_clinician.id:
            clinician["id"] = order.ordering_clinician.id
        body["ordering_clinician"] = clinician
    consent = order.consent
    if consent is not None and consent.granted and consent.given_at is not None:
        body["consent"] = {"given_by": consent.given_by, "given_at": _aware(consent.given_at).isoformat()}
    return body


def order_info(order: NewOrder) -> dict[str, Any]:
    """What the ORU^R01 for this order echoes back to the HIS."""
    return {
        "placer_order_number": order.placer_order_number,
        "procedure": {"code": order.procedure_code, "text": order.procedure_text},
        "patient_name": {
            "family": order.patient.family,
            "given": order.patient.given,
            "display": order.patient.display,
        },
        "ordering_clinician": (
            {"id": order.ordering_clinician.id, "name": order.ordering_clinician.name}
            if order.ordering_clinician
            else None
        ),
        "message_type": order.message_type,
        "version": order.version,
        "filler_order_number": order.filler_order_number,
    }


# ------------------------------------------------------------------------------------------------ errors

#: Service error code -> (HL7 table 0357 code, field to blame).
_INVALID: dict[str, tuple[int, str | None]] = {
    "consent-missing": (101, "CON"),
    "modality-missing": (101, "OBR-24"),
    "bad-accession": (103, "ORC-2"),
    "bad-national-id": (103, "PID-3"),
    "bad-patient": (103, "PID-8"),
    "bad-time": (102, "CON-13"),
    "no-route": (103, None),
}
#: JSON pointer of a request body (schema violations) -> the HL7 field it came from.
_POINTERS = {
    "/patient/id": "PID-3",
    "/patient/name": "PID-5",
    "/patient/sex": "PID-8",
    "/patient/birth_date": "PID-7",
    "/patient/national_id": "PID-3",
    "/clinical_question": "OBR-13",
    "/body_part": "OBR-15",
    "/modality": "OBR-24",
    "/scheduled_at": "TQ1-7",
    "/subspecialty": "OBR-4",
    "/accession_number": "ORC-2",
    "/priority": "TQ1-9",
    "/consent/given_by": "CON-24",
    "/consent/given_at": "CON-13",
}


def error_info(error: TelenetError, message: Inbound | None = None) -> ErrorInfo:
    """The ERR of an AE for a service refusal: Invalid -> 101/102/103 with the field when known,
    Forbidden/NotFound -> 204, Conflict -> 207 (205 for a duplicate accession number)."""
    if isinstance(error, GroupFailed):
        group = message.orders[error.group - 1] if isinstance(message, OrderGroups) else None
        info = error_info(error.cause, group)
        where = in_group(info.location, error.group) if info.location else f"ORC[{error.group}]"
        return ErrorInfo(info.code, where, f"order group {error.group}: {info.text}")
    accession_field = _accession_field(message)
    if isinstance(error, Invalid):
        if error.code == "schema-violation" and error.details:
            return _schema_error(error, accession_field)
        code, location = _INVALID.get(error.code, (103, None))
        if location == "ORC-2":
            location = accession_field
        return ErrorInfo(code, location, error.message)
    if isinstance(error, NotFound | Forbidden):
        location = {"unknown-facility": "MSH-4", "no-integration-account": "MSH-4", "unknown-patient": "MRG-1"}.get(
            error.code
        )
        if location is None and isinstance(message, CancelOrder | ChangeOrder | DiscontinueOrder):
            location = accession_field
        return ErrorInfo(204, location, error.message)
    if isinstance(error, Conflict):
        if error.code == "duplicate-accession":
            return ErrorInfo(205, accession_field, error.message)
        state = error.details.get("state") if isinstance(error.details, dict) else None
        text = f"illegal transition: {error.message}" + (f" (request state {state})" if state else "")
        return ErrorInfo(207, None, text)
    return ErrorInfo(207, None, error.message)


def _accession_field(message: Inbound | None) -> str:
    if isinstance(message, NewOrder) and message.accession_number != message.placer_order_number:
        return "IPC-1"
    return "ORC-2"


def _schema_error(error: Invalid, accession_field: str) -> ErrorInfo:
    first = error.details[0]
    pointer, text = str(first.get("location", "")), str(first.get("message", error.message))
    missing = "is a required property" in text
    if missing and pointer in ("", "/"):
        pointer = "/" + text.split("'")[1] if text.count("'") >= 2 else pointer
    elif missing:
        pointer = pointer.rstrip("/") + "/" + text.split("'")[1]
    location = _POINTERS.get(pointer)
    if location == "ORC-2":
        location = accession_field
    return ErrorInfo(101 if missing else 103, location, f"{pointer or '/'}: {text}")


# -------------------------------------------------------------------------------------------------- results

_ECG_NUMBERS = ("rate_bpm", "pr_ms", "qrs_ms", "qt_ms", "qtc_ms", "axis_deg")


def _local(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value).astimezone(HIS_TIMEZONE) if value else None


def report_result(payload: dict[str, Any]) -> ReportResult:
    """The ORU^R01 content of an outbox payload (see ``telenet.services.outbox``)."""
    patient = payload["patient"]
    structured = payload.get("ecg") or {}
    ecg: dict[str, Any] = {k: structured[k] for k in _ECG_NUMBERS if isinstance(structured.get(k), int | float)}
    if structured.get("rhythm"):
        ecg["rhythm"] = str(structured["rhythm"])
    impression = payload.get("impression") or str(structured.get("conclusion") or "")
    signed_at = _local(payload["signed_at"])
    assert signed_at is not None
    birth = patient.get("birth_date")
    return ReportResult(
        accession_number=payload["accession_number"],
        patient=PatientData(
            id=patient["id"],
            family=patient.get("family") or "",
            given=patient.get("given") or "",
            display=patient["name"],
            sex=patient.get("sex") or "U",
            birth_date=date.fromisoformat(birth) if birth else None,
        ),
        procedure_code=payload["procedure"]["code"] or "",
        procedure_text=payload["procedure"]["text"] or "",
        findings=payload.get("findings") or "",
        impression=impression,
        signer_name=payload["signer"]["name"],
        signer_id=payload["signer"]["id"],
        signed_at=signed_at,
        status="C" if payload["status"] == "C" else "P" if payload["status"] == "P" else "F",
        critical=bool(payload.get("critical")),
        critical_items=[str(i) for i in payload.get("critical_items") or []],
        addendum_text=payload.get("addendum_text"),
        ecg=ecg or None,
        observed_at=_local(payload.get("observed_at")),
        placer_order_number=payload.get("placer_order_number"),
        study_instance_uid=payload.get("study_instance_uid"),
        modality=payload.get("modality"),
        assistant_name=(payload.get("preliminary_author") or {}).get("name"),
        assistant_id=(payload.get("preliminary_author") or {}).get("id"),
        technician_name=(payload.get("technician") or {}).get("name"),
        ordering_clinician=(
            Clinician(id=ordering.get("id"), name=ordering.get("name") or "")
            if (ordering := payload.get("ordering_clinician"))
            else None
        ),
    )
