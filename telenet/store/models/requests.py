"""Patients, requests (the unit of work), their route history, reports, critical findings, consultations."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from telenet.store.models.base import Base, BigId
from telenet.store.types import UTCDateTime


class Patient(Base):
    """A patient as known to one institution (its HIS id); matched across institutions by a keyed hash of the
    national id, which is never stored in clear (only its last four characters, for display)."""

    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    his_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    sex: Mapped[str | None] = mapped_column(String(1))
    birth_date: Mapped[date | None] = mapped_column(Date)
    national_id_hmac: Mapped[str | None] = mapped_column(String(64), index=True)
    national_id_last4: Mapped[str | None] = mapped_column(String(4))
    # PID-3 identifiers by type (MR, PI, ...; never the national id): {"MR": "...", "PI": "..."}.
    identifiers: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Set when an ADT^A40 merged this id into another one (the merge row says what moved).
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (UniqueConstraint("institution_id", "his_id"),)


class Request(Base):
    """A remote read or consultation, from order to signed report."""

    __tablename__ = "requests"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    accession_number: Mapped[str] = mapped_column(String(16), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    modality: Mapped[str | None] = mapped_column(String(16))
    body_part: Mapped[str | None] = mapped_column(String(64))
    priority: Mapped[str] = mapped_column(String(8))
    priority_rank: Mapped[int] = mapped_column(Integer)
    clinical_question: Mapped[str] = mapped_column(Text)
    subspecialty: Mapped[str | None] = mapped_column(String(64))
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    requesting_institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    requesting_path: Mapped[str] = mapped_column(String(400))
    requester_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    requester_name: Mapped[str] = mapped_column(String(200))
    consent_given_by: Mapped[str | None] = mapped_column(String(200))
    consent_given_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    state: Mapped[str] = mapped_column(String(16))
    center_id: Mapped[int] = mapped_column(ForeignKey("centers.id"))
    claimed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    claim_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    sla_breached_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When the sweeper last acted on a breach; a new due time (after escalation) arms it again.
    breach_handled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    data_completed_by: Mapped[str | None] = mapped_column(String(32))
    data_completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    return_reason: Mapped[str | None] = mapped_column(String(32))
    return_note: Mapped[str | None] = mapped_column(Text)
    escalations: Mapped[int] = mapped_column(Integer, default=0)
    ordered_at: Mapped[datetime] = mapped_column(UTCDateTime())
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    final_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    returned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Optimistic lock: every transition is a conditional UPDATE on (id, version).
    version: Mapped[int] = mapped_column(Integer, default=1)
    # The HIS's numbers (ORC-2 placer, ORC-3 filler) as they came, for order control and status messages.
    placer_order_number: Mapped[str | None] = mapped_column(String(64))
    filler_order_number: Mapped[str | None] = mapped_column(String(64))
    # Why the modality discontinued the procedure step (MPPS DISCONTINUED), shown to the clinic.
    discontinued_reason: Mapped[str | None] = mapped_column(Text)
    # The Study Instance UID the order fixed (OMI IPC-3), else the one the worklist derives from the accession.
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    # The ordering clinician (HL7 ORC-12 / OBR-16, or the API's ordering_clinician), shown on the request.
    ordering_clinician_id: Mapped[str | None] = mapped_column(String(64))
    ordering_clinician_name: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (
        Index("ix_requests_worklist", "center_id", "state", "priority_rank", "due_at"),
        Index("ix_requests_requester", "requesting_institution_id", "state", "id"),
        Index("ix_requests_claim_expiry", "state", "claim_expires_at"),
        Index("ix_requests_due", "state", "due_at"),
        CheckConstraint("kind in ('imaging','ecg','consultation')", name="kind"),
        CheckConstraint("state in ('ordered','queued','claimed','final','returned','cancelled')", name="state"),
        CheckConstraint("priority in ('stat','urgent','routine')", name="priority"),
    )


class PatientMerge(Base):
    """An ADT^A40: the merged (prior) patient id folded into the surviving one, with every row that moved, so
    that an admin can undo it exactly."""

    __tablename__ = "patient_merges"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    institution_path: Mapped[str] = mapped_column(String(400))
    surviving_patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    merged_patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    merged_his_id: Mapped[str] = mapped_column(String(64))
    surviving_his_id: Mapped[str] = mapped_column(String(64))
    moved: Mapped[dict[str, Any]] = mapped_column(JSON)
    message_control_id: Mapped[str | None] = mapped_column(String(199))
    merged_at: Mapped[datetime] = mapped_column(UTCDateTime())
    merged_by: Mapped[str] = mapped_column(String(64))
    reverted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reverted_by: Mapped[str | None] = mapped_column(String(64))


class RouteStep(Base):
    """One routing decision (first route, escalation, rule, coordinator reassignment) and why."""

    __tablename__ = "route_steps"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    action: Mapped[str] = mapped_column(String(16))
    from_center_id: Mapped[int | None] = mapped_column(ForeignKey("centers.id"))
    center_id: Mapped[int | None] = mapped_column(ForeignKey("centers.id"))
    reason: Mapped[str] = mapped_column(Text)
    considered: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    actor: Mapped[str] = mapped_column(String(64))


class Report(Base):
    """A preliminary draft (overwritten while claimed), the signed final report (immutable) or an addendum."""

    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    findings: Mapped[str] = mapped_column(Text)
    impression: Mapped[str] = mapped_column(Text)
    critical: Mapped[bool] = mapped_column(Boolean, default=False)
    critical_items: Mapped[list[str]] = mapped_column(JSON, default=list)
    structured: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    author_name: Mapped[str] = mapped_column(String(200))
    author_institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    center_id: Mapped[int] = mapped_column(ForeignKey("centers.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    digest: Mapped[str | None] = mapped_column(String(64))
    # Preliminary versions are kept: each save is a new row numbered 1, 2, ...; the final report names the
    # author of the last preliminary (报告医师) beside its signer (审核医师, ``author_*``).
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    superseded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    preliminary_author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    preliminary_author_name: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (CheckConstraint("status in ('preliminary','final','addendum')", name="status"),)


class CriticalFinding(Base):
    """危急值: raised by the reader holding the request (from the claim, a preliminary or a signed report),
    acknowledged (with read-back) by the requesting side, escalated if not."""

    __tablename__ = "critical_findings"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"), index=True)
    report_id: Mapped[int | None] = mapped_column(ForeignKey("reports.id"))
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    items: Mapped[list[str]] = mapped_column(JSON)
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime())
    raised_by: Mapped[str] = mapped_column(String(200))
    deadline_at: Mapped[datetime] = mapped_column(UTCDateTime())
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    acknowledged_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    read_back_by: Mapped[str | None] = mapped_column(String(200))
    read_back: Mapped[str | None] = mapped_column(Text)
    raised_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    center_id: Mapped[int | None] = mapped_column(ForeignKey("centers.id"))
    # claim | preliminary | final | addendum: where the reader raised it from.
    source: Mapped[str | None] = mapped_column(String(16))

    __table_args__ = (Index("ix_critical_open", "acknowledged_at", "deadline_at"),)


class Participant(Base):
    """An extra participant of a consultation (MDT)."""

    __tablename__ = "participants"

    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The invited center the participant takes part for, who added them, and when access ended (removal keeps
    # the row: a participant sees the request only while ``removed_at`` is empty).
    center_id: Mapped[int | None] = mapped_column(ForeignKey("centers.id"))
    added_by: Mapped[str | None] = mapped_column(String(64))
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    removed_by: Mapped[str | None] = mapped_column(String(64))
    removal_reason: Mapped[str | None] = mapped_column(Text)


class Message(Base):
    """A message in a consultation's thread."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"), index=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    author_name: Mapped[str] = mapped_column(String(200))
    author_institution: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime())


class Event(Base):
    """Every state change, with a monotonic id; the live channels and outbound messages are fed from here."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    name: Mapped[str] = mapped_column(String(64))
    request_id: Mapped[int | None] = mapped_column(BigId)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)


class EventTopic(Base):
    """The topics an event is published on: ``worklist:{center}``, ``requests:{institution}``, ``request:{id}``."""

    __tablename__ = "event_topics"

    topic: Mapped[str] = mapped_column(String(96), primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"), primary_key=True)
