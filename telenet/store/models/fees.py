"""The fee ledger (收费、结算) and result-recognition decisions (检查检验结果互认): both append-only.

Neither table has an UPDATE or DELETE path in the code; the mapper events below refuse one made through
the ORM by mistake, so a bug shows up as an error instead of a silently rewritten ledger.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, Integer, String, Text, event
from sqlalchemy.orm import Mapped, mapped_column

from telenet.store.models.base import Base, BigId
from telenet.store.types import UTCDateTime


class FeeLine(Base):
    """One ledger line in integer fen: a charge written when a report goes final, or a refund.

    A charge has ``report_id`` (unique: one line per final report) and no ``refund_of``; a refund is a
    negative line with ``refund_of`` set (unique: a line is refunded at most once) and no ``report_id``.
    The agreement is kept as a snapshot (id, network, basis points) because agreements may be replaced
    when the network file is reloaded, while a ledger line must keep saying how it was split.
    """

    __tablename__ = "fee_lines"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"), index=True)
    report_id: Mapped[int | None] = mapped_column(ForeignKey("reports.id"), unique=True)
    refund_of: Mapped[int | None] = mapped_column(ForeignKey("fee_lines.id"), unique=True)
    inviting_institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    invited_institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    inviting_path: Mapped[str] = mapped_column(String(400))
    invited_path: Mapped[str] = mapped_column(String(400))
    center_id: Mapped[int] = mapped_column(ForeignKey("centers.id"))
    service: Mapped[str] = mapped_column(String(16))
    modality: Mapped[str | None] = mapped_column(String(16))
    priority: Mapped[str] = mapped_column(String(8))
    subspecialty: Mapped[str | None] = mapped_column(String(64))
    fee_schedule_id: Mapped[int] = mapped_column(ForeignKey("fee_schedule.id"))
    price_fen: Mapped[int] = mapped_column(Integer)
    inviting_fen: Mapped[int] = mapped_column(Integer)
    invited_fen: Mapped[int] = mapped_column(Integer)
    agreement_id: Mapped[int] = mapped_column(Integer)
    network_code: Mapped[str] = mapped_column(String(64))
    invited_share_bp: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        CheckConstraint("inviting_fen + invited_fen = price_fen", name="split_adds_up"),
        CheckConstraint("refund_of IS NOT NULL OR (report_id IS NOT NULL AND price_fen >= 0)", name="charge"),
        CheckConstraint(
            "refund_of IS NULL OR (report_id IS NULL AND price_fen <= 0 AND reason IS NOT NULL)", name="refund"
        ),
        CheckConstraint("invited_share_bp >= 0 AND invited_share_bp <= 10000", name="share_bp"),
        Index("ix_fee_lines_inviting_path_at", "inviting_path", "at"),
        Index("ix_fee_lines_invited_path_at", "invited_path", "at"),
    )


class RecognitionDecision(Base):
    """An institution's decision to recognize (互认) an earlier final result, or not and why.

    ``patient_id`` is the patient row of the accepting institution; the result may belong to another
    institution's row of the same person (matched by the national-id HMAC). ``fee_avoided_fen`` is the
    schedule price of the exam that was not repeated (recognized only; None when the schedule has none).
    """

    __tablename__ = "recognition_decisions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), index=True)
    result_request_id: Mapped[int] = mapped_column(ForeignKey("requests.id"), index=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    institution_path: Mapped[str] = mapped_column(String(400))
    producing_center_id: Mapped[int] = mapped_column(ForeignKey("centers.id"))
    # The institution that acquired the exam data (answers for its quality), beside the reading center.
    acquiring_institution_id: Mapped[int | None] = mapped_column(ForeignKey("institutions.id"))
    decision: Mapped[str] = mapped_column(String(16))
    reason_code: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)
    eligible: Mapped[bool] = mapped_column(Boolean)
    eligibility_reason: Mapped[str] = mapped_column(String(64))
    clinician_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    clinician: Mapped[str] = mapped_column(String(200))
    fee_schedule_id: Mapped[int | None] = mapped_column(ForeignKey("fee_schedule.id"))
    fee_avoided_fen: Mapped[int | None] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        CheckConstraint("decision in ('recognized','not_recognized')", name="decision"),
        CheckConstraint("decision = 'not_recognized' OR reason_code IS NULL", name="recognized"),
        CheckConstraint(
            "decision = 'recognized' OR (reason_code IS NOT NULL AND fee_avoided_fen IS NULL)", name="not_recognized"
        ),
        Index("ix_recognition_decisions_path_at", "institution_path", "at"),
    )


def _refuse_change(_mapper: Any, _connection: Any, target: Any) -> None:
    raise RuntimeError(f"{type(target).__name__} rows are append-only: write a new row instead")


for _model in (FeeLine, RecognitionDecision):
    event.listen(_model, "before_update", _refuse_change)
    event.listen(_model, "before_delete", _refuse_change)
