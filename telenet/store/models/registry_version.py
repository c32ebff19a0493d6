"""The registry's version: bumped in the transaction of every registry change (``network load``, an admin's
change through the API), so that each hub process knows when its in-memory registry snapshot is stale; and
the registry's history: every change an admin makes is a revision with its validity period."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from telenet.store.models.base import Base, BigId
from telenet.store.types import UTCDateTime


class RegistryVersion(Base):
    __tablename__ = "registry_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class RegistryRevision(Base):
    """One version of an institution, center, agreement or account: the whole versioned state (``data``) in
    force from ``valid_from`` until ``valid_to`` (None: still in force, or scheduled). Never updated except to
    close its period when the next revision takes over; the live row holds the revision in force."""

    __tablename__ = "registry_revisions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    object_id: Mapped[int] = mapped_column(Integer)
    # Code, "network/member" or username: what a person searches the history by.
    object_key: Mapped[str] = mapped_column(String(200))
    # The institution path the object belongs to (the admin's subtree filter).
    object_path: Mapped[str | None] = mapped_column(String(400))
    revision: Mapped[int] = mapped_column(Integer)
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime())
    valid_to: Mapped[datetime | None] = mapped_column(UTCDateTime())
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    changed: Mapped[list[str] | None] = mapped_column(JSON)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    changed_by: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(500))

    __table_args__ = (
        UniqueConstraint("kind", "object_id", "revision", name="uq_registry_revisions_object_revision"),
        Index("ix_registry_revisions_open", "kind", "valid_to"),
        CheckConstraint("kind in ('institution','center','agreement','account')", name="kind"),
    )
