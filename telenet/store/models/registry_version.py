"""The registry's version: bumped in the transaction of every registry change (``network load``), so that each
hub process knows when its in-memory registry snapshot is stale."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer
from sqlalchemy.orm import Mapped, mapped_column

from telenet.store.models.base import Base
from telenet.store.types import UTCDateTime


class RegistryVersion(Base):
    __tablename__ = "registry_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
