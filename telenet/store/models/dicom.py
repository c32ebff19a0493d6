"""The DICOM index (studies, series, instances and the files that hold them), ECG measurements, modality
performed procedure steps, and the durable forwarding queue to center PACS nodes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, CheckConstraint, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from telenet.store.models.base import Base, BigId
from telenet.store.types import UTCDateTime


class DicomStudy(Base):
    """A study as received: matched to a request (by AccessionNumber, else by a known StudyInstanceUID), or
    waiting in the reconciliation list (``request_id`` null) until a coordinator links it."""

    __tablename__ = "dicom_studies"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    request_id: Mapped[int | None] = mapped_column(ForeignKey("requests.id"), index=True)
    # The institution whose registered AE sent it (scope of reconciliation and query).
    source_institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"), index=True)
    source_path: Mapped[str] = mapped_column(String(400))
    calling_ae: Mapped[str] = mapped_column(String(16))
    accession_number: Mapped[str | None] = mapped_column(String(16), index=True)
    # PatientName as decoded with its SpecificCharacterSet (ISO_IR 192, GB18030 ...), PN components kept.
    patient_name: Mapped[str | None] = mapped_column(String(200))
    patient_id: Mapped[str | None] = mapped_column(String(64))
    patient_birth_date: Mapped[str | None] = mapped_column(String(8))
    patient_sex: Mapped[str | None] = mapped_column(String(16))
    study_date: Mapped[str | None] = mapped_column(String(8))
    study_time: Mapped[str | None] = mapped_column(String(16))
    study_id: Mapped[str | None] = mapped_column(String(16))
    study_description: Mapped[str | None] = mapped_column(String(64))
    referring_physician: Mapped[str | None] = mapped_column(String(200))
    # OperatorsName (0008,1070) of the first instance: the technician (技师) who acquired it, OBR-34 in the ORU.
    operators_name: Mapped[str | None] = mapped_column(String(200))
    modalities: Mapped[list[str]] = mapped_column(JSON, default=list)
    character_set: Mapped[str | None] = mapped_column(String(64))
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    total_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    first_received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # How the match was made: accession, study-uid, mpps, link (coordinator).
    matched_by: Mapped[str | None] = mapped_column(String(16))
    linked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    linked_by: Mapped[str | None] = mapped_column(String(64))
    # An MPPS COMPLETED listed instances that have not all arrived yet.
    mpps_waiting: Mapped[bool] = mapped_column(Boolean, default=False)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    completed_by: Mapped[str | None] = mapped_column(String(16))

    __table_args__ = (
        Index("ix_dicom_studies_reconcile", "request_id", "source_path"),
        Index("ix_dicom_studies_quiet", "completed_at", "last_received_at"),
        # QIDO-RS matching keys (revision 0002)
        Index("ix_dicom_studies_patient_id", "patient_id"),
        Index("ix_dicom_studies_study_date", "study_date"),
        Index("ix_dicom_studies_patient_name", "patient_name"),
    )


class DicomSeries(Base):
    __tablename__ = "dicom_series"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("dicom_studies.id"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str | None] = mapped_column(String(16))
    series_number: Mapped[int | None] = mapped_column(Integer)
    series_description: Mapped[str | None] = mapped_column(String(64))
    body_part: Mapped[str | None] = mapped_column(String(64))
    instance_count: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (Index("ix_dicom_series_study_modality", "study_id", "modality"),)


class DicomInstance(Base):
    """One stored SOP instance: the file (relative to the storage directory) and what identifies it."""

    __tablename__ = "dicom_instances"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("dicom_studies.id"), index=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("dicom_series.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    instance_number: Mapped[int | None] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(400))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    calling_ae: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_dicom_instances_sop_class_uid", "sop_class_uid"),)


class EcgMeasurement(Base):
    """What the hub measured on an ECG waveform when it arrived: shown to the reader as a suggestion only,
    never written into a report by itself. The SVG and viewer JSON are rendered next to the file."""

    __tablename__ = "ecg_measurements"

    instance_id: Mapped[int] = mapped_column(ForeignKey("dicom_instances.id"), primary_key=True)
    heart_rate_bpm: Mapped[float | None] = mapped_column(Float)
    rr_ms_mean: Mapped[float | None] = mapped_column(Float)
    r_peak_count: Mapped[int] = mapped_column(Integer, default=0)
    lead: Mapped[str | None] = mapped_column(String(16))
    method: Mapped[str] = mapped_column(Text)
    sampling_hz: Mapped[float | None] = mapped_column(Float)
    duration_s: Mapped[float | None] = mapped_column(Float)
    leads: Mapped[list[str]] = mapped_column(JSON, default=list)
    svg_path: Mapped[str | None] = mapped_column(String(400))
    json_path: Mapped[str | None] = mapped_column(String(400))
    error: Mapped[str | None] = mapped_column(Text)


class Mpps(Base):
    """A Modality Performed Procedure Step (N-CREATE, then N-SET to COMPLETED or DISCONTINUED)."""

    __tablename__ = "dicom_mpps"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16))
    calling_ae: Mapped[str] = mapped_column(String(16))
    source_institution_id: Mapped[int] = mapped_column(ForeignKey("institutions.id"))
    study_instance_uid: Mapped[str | None] = mapped_column(String(64), index=True)
    accession_number: Mapped[str | None] = mapped_column(String(16))
    request_id: Mapped[int | None] = mapped_column(ForeignKey("requests.id"), index=True)
    modality: Mapped[str | None] = mapped_column(String(16))
    # SOP Instance UIDs listed by the COMPLETED N-SET (Performed Series Sequence).
    referenced_sop_uids: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (CheckConstraint("status in ('IN PROGRESS','COMPLETED','DISCONTINUED')", name="status"),)


class ForwardJob(Base):
    """Forward one study to one center's PACS (C-STORE SCU): retried with backoff, dead after a limit."""

    __tablename__ = "dicom_forward_jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("dicom_studies.id"), index=True)
    request_id: Mapped[int | None] = mapped_column(ForeignKey("requests.id"), index=True)
    center_id: Mapped[int] = mapped_column(ForeignKey("centers.id"), index=True)
    # "AE@host:port" as configured when the job was last tried (the destination of outage alerts).
    destination: Mapped[str] = mapped_column(String(300))
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    instances_sent: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_dicom_forward_due", "state", "next_attempt_at"),
        CheckConstraint("state in ('pending','sending','done','dead')", name="state"),
    )


class ForwardDestination(Base):
    """A forwarding destination's health, so an outage raises one alert, not one per job or instance."""

    __tablename__ = "dicom_forward_destinations"

    destination: Mapped[str] = mapped_column(String(300), primary_key=True)
    center_id: Mapped[int] = mapped_column(ForeignKey("centers.id"))
    down_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    alerted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
