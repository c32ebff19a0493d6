"""Users, their centers, bearer tokens and the audit trail."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import DDL, JSON, Boolean, CheckConstraint, Date, ForeignKey, Index, Integer, String, event
from sqlalchemy.orm import Mapped, mapped_column

from telenet.store.models.base import Base, BigId
from telenet.store.types import UTCDateTime


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str | None] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    title: Mapped[str | None] = mapped_column(String(64))
    practice_since: Mapped[date | None] = mapped_column(Date)
    password_hash: Mapped[str | None] = mapped_column(String(300))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Consecutive failed logins; at the configured count the account is locked until ``locked_until``.
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Bumped whenever the account's tokens are revoked or its scope changes: every process compares it
    # with the value its token cache holds (services.auth.authenticate), so a change is seen at once.
    auth_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __table_args__ = (
        CheckConstraint("role in ('requester','reader','coordinator','admin','integration')", name="role"),
    )


class UserCenter(Base):
    __tablename__ = "user_centers"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    center_id: Mapped[int] = mapped_column(ForeignKey("centers.id"), primary_key=True, index=True)


class Token(Base):
    """A bearer token, stored as the SHA-256 of its value (the value itself is only ever in the client)."""

    __tablename__ = "tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # "bearer" (API clients) or "console" (a browser's session cookie): one table, so revocation ends both.
    kind: Mapped[str] = mapped_column(String(16), default="bearer", server_default="bearer")


class AuditEntry(Base):
    """Who did what to which object, when, from where, and how it ended; append-only."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor_id: Mapped[int | None] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(64))
    actor_institution_path: Mapped[str | None] = mapped_column(String(400))
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str | None] = mapped_column(String(128))
    # Path of the institution the object belongs to, so admins can filter their subtree.
    object_path: Mapped[str | None] = mapped_column(String(400))
    remote_addr: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (
        Index("ix_audit_object_path_at", "object_path", "at"),
        Index("ix_audit_actor_path_at", "actor_institution_path", "at"),
    )


# The audit trail is append-only in the database itself, whoever connects: UPDATE, DELETE (and TRUNCATE on
# PostgreSQL) fail. Installed with the table (create_all) and by migration 0004.
AUDIT_APPEND_ONLY_SQLITE = (
    "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END",
    "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit "
    "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END",
)
AUDIT_APPEND_ONLY_POSTGRESQL = (
    "CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'the audit trail is append-only'; END $$",
    "CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit FOR EACH ROW EXECUTE FUNCTION audit_append_only()",
    "CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()",
)
for _statement in AUDIT_APPEND_ONLY_SQLITE:
    event.listen(AuditEntry.__table__, "after_create", DDL(_statement).execute_if(dialect="sqlite"))  # type: ignore[no-untyped-call]
for _statement in AUDIT_APPEND_ONLY_POSTGRESQL:
    event.listen(AuditEntry.__table__, "after_create", DDL(_statement).execute_if(dialect="postgresql"))  # type: ignore[no-untyped-call]
