"""Clinical records added for fidelity: the phone steps of a critical finding (危急值登记) and the
practitioner registry an admin maintains (title, practice-since, licence), which decides who may sign."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, Date, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from telenet.store.models.base import Base, BigId
from telenet.store.types import UTCDateTime


class CriticalCall(Base):
    """One recorded phone call about a critical finding: who called whom, when, what was read back (复述),
    and whether the caller confirmed the read-back (确认)."""

    __tablename__ = "critical_calls"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    critical_id: Mapped[int] = mapped_column(ForeignKey("critical_findings.id"), index=True)
    called_at: Mapped[datetime] = mapped_column(UTCDateTime())
    caller_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    caller_name: Mapped[str] = mapped_column(String(200))
    callee_name: Mapped[str] = mapped_column(String(200))
    callee_role: Mapped[str | None] = mapped_column(String(64))
    phone: Mapped[str | None] = mapped_column(String(32))
    read_back: Mapped[str] = mapped_column(Text)
    confirmed: Mapped[bool] = mapped_column(Boolean)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PractitionerRecord(Base):
    """The registry's record of a physician, kept by an admin from the licence (执业证书), not by the user."""

    __tablename__ = "practitioner_records"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    title: Mapped[str | None] = mapped_column(String(64))
    practice_since: Mapped[date | None] = mapped_column(Date)
    licence_number: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_by: Mapped[str] = mapped_column(String(64))
