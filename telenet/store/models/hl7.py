"""The HL7 gateway's durable state: inbound message log (idempotency, with the ACK sent), the results
outbox, the health of each destination, and dead letters."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from telenet.store.models.base import Base, BigId
from telenet.store.types import UTCDateTime


class HL7InboundMessage(Base):
    """One accepted-or-refused inbound message, keyed by (sending facility, MSH-10), with the exact ACK bytes
    we answered: a re-sent message gets them again and changes nothing. Written in the transaction of its
    effect."""

    __tablename__ = "hl7_inbound_messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    facility: Mapped[str] = mapped_column(String(64))
    message_control_id: Mapped[str] = mapped_column(String(199))
    message_type: Mapped[str] = mapped_column(String(16))
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    peer: Mapped[str | None] = mapped_column(String(64))
    ack_code: Mapped[str] = mapped_column(String(2))
    ack: Mapped[bytes] = mapped_column(LargeBinary)
    error: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[int | None] = mapped_column(ForeignKey("requests.id"), index=True)
    # What the ORU must echo for an order that came in by HL7: placer order number, procedure, name parts.
    order_info: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (UniqueConstraint("facility", "message_control_id", name="uq_hl7_inbound_messages_key"),)


class HL7OutboxItem(Base):
    """An ORU^R01 to deliver, written in the transaction of the report that causes it; ``payload`` holds what
    the message is built from (JSON, no HL7). Delivered strictly in id order per (destination, patient)."""

    __tablename__ = "hl7_outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"), index=True)
    report_id: Mapped[int | None] = mapped_column(ForeignKey("reports.id"))
    # "result" (ORU^R01 of a report) or "status" (ORM^O01 ORC-1 SC of a state change): one queue, one order.
    message_kind: Mapped[str] = mapped_column(String(8), default="result", server_default="result")
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    institution_path: Mapped[str] = mapped_column(String(400))
    destination_host: Mapped[str] = mapped_column(String(255))
    destination_port: Mapped[int] = mapped_column(Integer)
    receiving_facility: Mapped[str] = mapped_column(String(64))
    patient_key: Mapped[str] = mapped_column(String(100))
    message_control_id: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(16))
    result_status: Mapped[str] = mapped_column(String(1))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A critical finding sent when found (status P, before any signed report).
    critical_id: Mapped[int | None] = mapped_column(ForeignKey("critical_findings.id"))

    __table_args__ = (
        Index("ix_hl7_outbox_queue", "status", "destination_host", "destination_port", "patient_key", "id"),
        Index("ix_hl7_outbox_scope", "institution_path", "status", "id"),
        CheckConstraint("status in ('pending','delivered','dead')", name="status"),
        CheckConstraint("result_status in ('F','C','S','P')", name="result_status"),
    )


class HL7Destination(Base):
    """A receiving HIS endpoint and whether it is in an outage: one alert when it goes down, one when it
    recovers, whichever process and however many restarts in between."""

    __tablename__ = "hl7_destinations"

    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    port: Mapped[int] = mapped_column(Integer, primary_key=True)
    down_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    outages: Mapped[int] = mapped_column(Integer, default=0)


class HL7DeadLetter(Base):
    """A message we could not process: inbound bytes that did not parse (answered AR) or an outbound ORU the
    HIS refused with AR or that ran out of attempts. Kept raw for inspection and replay by an admin."""

    __tablename__ = "hl7_dead_letters"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    direction: Mapped[str] = mapped_column(String(8))
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    reason: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    peer: Mapped[str | None] = mapped_column(String(64))
    facility: Mapped[str | None] = mapped_column(String(64))
    message_control_id: Mapped[str | None] = mapped_column(String(199))
    institution_id: Mapped[int | None] = mapped_column(ForeignKey("institutions.id"))
    # Admins see their subtree's dead letters; NULL (sender unknown) is visible to network-wide admins only.
    institution_path: Mapped[str | None] = mapped_column(String(400))
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("hl7_outbox.id"))
    replays: Mapped[int] = mapped_column(Integer, default=0)
    last_replayed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_replayed_by: Mapped[str | None] = mapped_column(String(64))
    last_outcome: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_hl7_dead_letters_scope", "institution_path", "id"),
        CheckConstraint("direction in ('inbound','outbound')", name="direction"),
    )
