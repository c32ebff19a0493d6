"""The plain, picklable values the HL7 codec produces and consumes (no hl7apy objects escape it).

Frozen dataclasses of bytes, str, dates and numbers only, so that they cross a process pool unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

AckCode = Literal["AA", "AE", "AR", "CA", "CE", "CR"]
Priority = Literal["stat", "urgent", "routine"]
Kind = Literal["imaging", "ecg", "consultation"]


@dataclass(frozen=True)
class PatientData:
    id: str
    family: str
    given: str
    display: str
    sex: str  # M F O U
    birth_date: date | None
    national_id: str | None = None
    # PID-3 repetitions by identifier type (table 0203: MR, PI, ...), the national id excepted.
    identifiers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Clinician:
    id: str | None
    name: str


@dataclass(frozen=True)
class Consent:
    given_by: str
    given_at: datetime | None
    relationship: str | None = None  # CON-25, table 0548
    mode: str | None = None  # CON-10: W written, V verbal, T telephone
    status: str | None = None  # CON-11: A active, L limited, R refused, X rescinded, B bypassed
    granted: bool = True


@dataclass(frozen=True)
class PatientUpdate:
    facility: str
    message_control_id: str
    version: str
    patient: PatientData
    message_type: str  # "ADT^A01" | "ADT^A04" | "ADT^A05" | "ADT^A08"
    sending_application: str = ""
    charset: str = "utf-8"


@dataclass(frozen=True)
class NewOrder:
    facility: str
    message_control_id: str
    version: str
    patient: PatientData
    accession_number: str
    kind: Kind
    modality: str | None  # DICOM modality: DX, CT, ..., ECG; None for a consultation
    procedure_code: str
    procedure_text: str
    body_part: str | None
    priority: Priority
    clinical_question: str | None
    ordering_clinician: Clinician | None
    consent: Consent | None
    placer_order_number: str | None
    filler_order_number: str | None
    message_type: str  # "ORM^O01" | "OMI^O23"
    sending_application: str = ""
    charset: str = "utf-8"
    study_instance_uid: str | None = None  # IPC-3: the Study Instance UID the order fixes
    # A consultation (OBR-4 service code CONSULT[-<subspecialty>]): the subspecialty asked for and the wished
    # session time (TQ1-7, else OBR-27.4, else ORC-7.4), which the requesting side thereby proposes.
    subspecialty: str | None = None
    scheduled_at: datetime | None = None


@dataclass(frozen=True)
class CancelOrder:
    facility: str
    message_control_id: str
    version: str
    accession_number: str
    patient: PatientData | None
    message_type: str
    sending_application: str = ""
    charset: str = "utf-8"


@dataclass(frozen=True)
class ChangeOrder:
    """ORC-1 XO: new values for what may change while the request is not yet claimed (None: unchanged)."""

    facility: str
    message_control_id: str
    version: str
    accession_number: str
    message_type: str
    priority: Priority | None = None
    clinical_question: str | None = None
    scheduled_at: datetime | None = None
    body_part: str | None = None
    sending_application: str = ""
    charset: str = "utf-8"


@dataclass(frozen=True)
class DiscontinueOrder:
    """ORC-1 DC: stop an order whose data may already have arrived; ORC-16 the reason when given."""

    facility: str
    message_control_id: str
    version: str
    accession_number: str
    message_type: str
    reason: str | None = None
    sending_application: str = ""
    charset: str = "utf-8"


Order = NewOrder | CancelOrder | ChangeOrder | DiscontinueOrder


@dataclass(frozen=True)
class OrderGroups:
    """An ORM^O01 / OMI^O23 with several ORC groups: every group is applied, or none."""

    facility: str
    message_control_id: str
    version: str
    message_type: str
    orders: tuple[Order, ...]
    sending_application: str = ""
    charset: str = "utf-8"


@dataclass(frozen=True)
class MergePatient:
    """ADT^A40: ``prior_id`` (MRG-1) is merged into ``patient`` (PID-3), the surviving id."""

    facility: str
    message_control_id: str
    version: str
    patient: PatientData
    prior_id: str
    message_type: str = "ADT^A40"
    sending_application: str = ""
    charset: str = "utf-8"


@dataclass(frozen=True)
class ErrorInfo:
    """One ERR segment: a table 0357 code, the field to blame ("PID-3", "MSH-4", "ORC") and a text."""

    code: int
    location: str | None = None
    text: str | None = None
    severity: Literal["E", "W", "I"] = "E"


@dataclass(frozen=True)
class Rejected:
    """An inbound message we answer with AR (unparseable or unsupported) or AE (valid, not acceptable).

    Header fields are whatever could be read, even from a broken message, so the ACK can echo MSH-10.
    ``raw_text`` is the decoded message, None when the bytes did not decode.
    """

    ack_code: Literal["AR", "AE"]
    reason: str
    error_location: str | None
    message_control_id: str | None
    facility: str | None
    version: str | None
    raw_text: str | None
    error_code: int = 207
    message_type: str | None = None
    sending_application: str | None = None
    charset: str | None = None

    @property
    def error(self) -> ErrorInfo:
        return ErrorInfo(code=self.error_code, location=self.error_location, text=self.reason)


Inbound = (
    PatientUpdate | NewOrder | CancelOrder | ChangeOrder | DiscontinueOrder | OrderGroups | MergePatient | Rejected
)


@dataclass(frozen=True)
class ReportResult:
    """What goes back to the requesting HIS as ORU^R01.

    ``ecg`` keys (all optional): rate_bpm, pr_ms, qrs_ms, qt_ms, qtc_ms, axis_deg (numbers) and
    rhythm (text). ``status`` is F for a final report, C for a correction or addendum, P for a critical
    finding sent the moment it is found (before any report is signed). ``assistant_*`` is the author of the
    preliminary report (报告医师, OBR-33) when someone else signed (审核医师, OBR-32); ``technician_name`` the
    images' OperatorsName (技师, OBR-34); ``ordering_clinician`` is echoed in ORC-12 / OBR-16.
    """

    accession_number: str
    patient: PatientData
    procedure_code: str
    procedure_text: str
    findings: str
    impression: str
    signer_name: str
    signer_id: str
    signed_at: datetime
    status: Literal["F", "C", "P"] = "F"
    critical: bool = False
    critical_items: list[str] = field(default_factory=list)
    addendum_text: str | None = None
    ecg: dict[str, Any] | None = None
    observed_at: datetime | None = None
    placer_order_number: str | None = None  # the HIS's own order number; defaults to the accession
    modality: str | None = None
    assistant_name: str | None = None
    assistant_id: str | None = None
    # The technician (技师) who acquired the exam, as the images name them (DICOM PN, OBR-34).
    technician_name: str | None = None
    ordering_clinician: Clinician | None = None
    # The Study Instance UID the worklist handed out (or the order's IPC-3 fixed): the images carry it too.
    study_instance_uid: str | None = None


@dataclass(frozen=True)
class AckInfo:
    ack_code: str
    control_id_acked: str
    text: str | None
    error_code: int | None = None
    message_control_id: str | None = None


class InvalidAck(ValueError):
    """The peer's answer is not an HL7 ACK we can read."""


__all__ = [
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
]
