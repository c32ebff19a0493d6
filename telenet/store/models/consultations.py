"""Consultations as sessions: the proposed and agreed time, the phase, the invited centers (MDT) and every step
with its time and person (the timeline). Participants are ``requests.Participant`` rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from telenet.store.models.base import Base, BigId
from telenet.store.types import UTCDateTime


class Consultation(Base):
    """The session of a consultation request (one row per request, made at its first step)."""

    __tablename__ = "consultations"

    request_id: Mapped[int] = mapped_column(BigId, ForeignKey("requests.id"), primary_key=True)
    phase: Mapped[str] = mapped_column(String(16))
    proposed_time: Mapped[datetime | None] = mapped_column(UTCDateTime())
    proposed_by: Mapped[str | None] = mapped_column(String(64))
    proposed_by_side: Mapped[str | None] = mapped_column(String(16))
    proposed_on: Mapped[datetime | None] = mapped_column(UTCDateTime())
    agreed_time: Mapped[datetime | None] = mapped_column(UTCDateTime())
    agreed_by: Mapped[str | None] = mapped_column(String(64))
    agreed_on: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_by: Mapped[str | None] = mapped_column(String(64))
    opinion_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    opinion_by: Mapped[str | None] = mapped_column(String(64))
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelled_by: Mapped[str | None] = mapped_column(String(64))
    # Optimistic lock: every step is a conditional UPDATE on (request_id, version).
    version: Mapped[int] = mapped_column(Integer, default=1)

    __table_args__ = (
        CheckConstraint(
            "phase in ('requested','proposed','scheduled','in_session','opinion','cancelled')", name="phase"
        ),
    )


class ConsultationCenter(Base):
    """A center invited to a consultation beside the one it is routed to (MDT); never deleted: removal ends it."""

    __tablename__ = "consultation_centers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[int] = mapped_column(BigId, ForeignKey("requests.id"), index=True)
    center_id: Mapped[int] = mapped_column(ForeignKey("centers.id"))
    invited_by: Mapped[str] = mapped_column(String(64))
    invited_at: Mapped[datetime] = mapped_column(UTCDateTime())
    removed_by: Mapped[str | None] = mapped_column(String(64))
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ConsultationStep(Base):
    """One entry of a consultation's timeline: a phase step, an invitation or a removal, with time and person."""

    __tablename__ = "consultation_steps"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    request_id: Mapped[int] = mapped_column(BigId, ForeignKey("requests.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    action: Mapped[str] = mapped_column(String(32))
    phase: Mapped[str] = mapped_column(String(16))
    by: Mapped[str] = mapped_column(String(64))
    by_name: Mapped[str] = mapped_column(String(200))
    by_institution: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
