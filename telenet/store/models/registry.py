"""The registry: institutions of the five tiers, networks, agreements, centers, routing rules."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, CheckConstraint, Date, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy import false as sa_false
from sqlalchemy.orm import Mapped, mapped_column

from telenet.store.models.base import Base
from telenet.store.types import UTCDateTime


class Institution(Base):
    __tablename__ = "institutions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    tier: Mapped[str] = mapped_column(String(16))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("institutions.id"), index=True)
    # Materialized ancestor path "/PROV/CITY/COUNTY/": "this institution and everything under it"
    # is one indexed prefix query.
    path: Mapped[str] = mapped_column(String(400), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    grade: Mapped[str] = mapped_column(String(16))
    hl7_facility: Mapped[str | None] = mapped_column(String(64), unique=True)
    hl7_host: Mapped[str | None] = mapped_column(String(255))
    hl7_port: Mapped[int | None] = mapped_column(Integer)
    # Failing quality control (质控不合格) as the acquiring side: its exam data are not recognized elsewhere.
    qc_failed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    # Character sets its peers understand (UTF-8, GB18030, GBK): DICOM answers to its AEs, HL7 in and out.
    dicom_charset: Mapped[str | None] = mapped_column(String(16))
    hl7_charset: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Whether the HIS wants order status messages (ORM^O01 ORC-1 SC) besides the ORU, and which application
    # acknowledgement it expects for orders: "ack" (original mode) or "orr" (ORR^O02 / ORI^O24).
    hl7_order_status: Mapped[bool] = mapped_column(Boolean, default=False, server_default=sa_false())
    hl7_ack_mode: Mapped[str] = mapped_column(String(8), default="ack", server_default="ack")
    # How this institution's DICOM and HL7 peers authenticate (services.peers): TLS client certificate
    # fingerprints (SHA-256, hex) and/or source networks. None: not registered (accepted where TLS is off).
    peer_cert_sha256: Mapped[list[str] | None] = mapped_column(JSON)
    peer_networks: Mapped[list[str] | None] = mapped_column(JSON)

    __table_args__ = (CheckConstraint("tier in ('province','city','county','township','village')", name="tier"),)


class InstitutionAETitle(Base):
    """A DICOM calling AE title whitelisted for an institution; unique across the network."""

    __tablename__ = "institution_ae_titles"

    ae_title: Mapped[str] = mapped_column(String(16), primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id", ondelete="CASCADE"), index=True)
    # Where the modality listens (network file ``dicom_nodes``): storage commitment reports on a new association.
    host: Mapped[str | None] = mapped_column(String(255))
    port: Mapped[int | None] = mapped_column(Integer)
    # The character set this AE understands (UTF-8, GB18030, GBK); None: the institution's ``dicom_charset``.
    charset: Mapped[str | None] = mapped_column(String(16))


class Network(Base):
    __tablename__ = "networks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    lead_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    recognition_validity_days: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Member sites under the lead's imaging center's quality control (同质化): their exams count at the
    # level of the center that reads them.
    homogeneous_sites: Mapped[list[str] | None] = mapped_column(JSON)


class NetworkMember(Base):
    __tablename__ = "network_members"

    network_id: Mapped[int] = mapped_column(ForeignKey("networks.id", ondelete="CASCADE"), primary_key=True)
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), primary_key=True, index=True)


class Agreement(Base):
    """合作协议 between a network's lead (invited, 受邀方) and one member (inviting, 邀请方)."""

    __tablename__ = "agreements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    network_id: Mapped[int] = mapped_column(ForeignKey("networks.id", ondelete="CASCADE"))
    member_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    lead_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    valid_from: Mapped[date] = mapped_column(Date)
    valid_to: Mapped[date] = mapped_column(Date)
    services: Mapped[list[str]] = mapped_column(JSON)
    invited_share_bp: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        UniqueConstraint("network_id", "member_id"),
        CheckConstraint("invited_share_bp >= 0 and invited_share_bp <= 10000", name="share_bp"),
        CheckConstraint("valid_from <= valid_to", name="dates"),
    )


class Center(Base):
    """A reading or consultation center hosted by an institution."""

    __tablename__ = "centers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    service: Mapped[str] = mapped_column(String(16))
    modalities: Mapped[list[str]] = mapped_column(JSON)
    subspecialties: Mapped[list[str]] = mapped_column(JSON)
    opening_hours: Mapped[list[dict[str, str]] | None] = mapped_column(JSON)
    sla_minutes: Mapped[dict[str, int]] = mapped_column(JSON)
    capacity: Mapped[int] = mapped_column(Integer)
    dicom_ae_title: Mapped[str | None] = mapped_column(String(16))
    dicom_host: Mapped[str | None] = mapped_column(String(255))
    dicom_port: Mapped[int | None] = mapped_column(Integer)
    qc_failed: Mapped[bool] = mapped_column(Boolean, default=False)
    note: Mapped[str | None] = mapped_column(String(1000))

    __table_args__ = (
        CheckConstraint("service in ('imaging','ecg','consultation')", name="service"),
        CheckConstraint("capacity >= 1", name="capacity"),
    )


class RoutingRule(Base):
    """An explicit routing rule of a network (e.g. STAT head CT straight to the city stroke center)."""

    __tablename__ = "routing_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    network_id: Mapped[int] = mapped_column(ForeignKey("networks.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    center_id: Mapped[int] = mapped_column(ForeignKey("centers.id"))
    modality: Mapped[str | None] = mapped_column(String(16))
    body_part: Mapped[str | None] = mapped_column(String(64))
    priority: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(500))


class FeeScheduleEntry(Base):
    """A versioned price (integer fen) of a service; rows are never edited once in force."""

    __tablename__ = "fee_schedule"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    service: Mapped[str] = mapped_column(String(16))
    modality: Mapped[str | None] = mapped_column(String(16))
    priority: Mapped[str | None] = mapped_column(String(16))
    subspecialty: Mapped[str | None] = mapped_column(String(64))
    price_fen: Mapped[int] = mapped_column(Integer)
    effective_from: Mapped[date] = mapped_column(Date)
    effective_to: Mapped[date | None] = mapped_column(Date)
    source: Mapped[str | None] = mapped_column(String(500))

    __table_args__ = (CheckConstraint("price_fen >= 0", name="price"),)
