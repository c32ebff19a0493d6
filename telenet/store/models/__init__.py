"""All ORM models; importing this package registers every table on ``Base.metadata``."""

from telenet.store.models.accounts import AuditEntry, Token, User, UserCenter
from telenet.store.models.attachments import Attachment
from telenet.store.models.base import Base
from telenet.store.models.clinical import CriticalCall, PractitionerRecord
from telenet.store.models.consultations import Consultation, ConsultationCenter, ConsultationStep
from telenet.store.models.dicom import (
    DicomInstance,
    DicomSeries,
    DicomStudy,
    EcgMeasurement,
    ForwardDestination,
    ForwardJob,
    Mpps,
)
from telenet.store.models.fees import FeeLine, RecognitionDecision
from telenet.store.models.hl7 import HL7DeadLetter, HL7Destination, HL7InboundMessage, HL7OutboxItem
from telenet.store.models.registry import (
    Agreement,
    Center,
    FeeScheduleEntry,
    Institution,
    InstitutionAETitle,
    Network,
    NetworkMember,
    RoutingRule,
)
from telenet.store.models.registry_version import RegistryRevision, RegistryVersion
from telenet.store.models.requests import (
    CriticalFinding,
    Event,
    EventTopic,
    Message,
    Participant,
    Patient,
    PatientMerge,
    Report,
    Request,
    RouteStep,
)

__all__ = [
    "Agreement",
    "Attachment",
    "AuditEntry",
    "Base",
    "Center",
    "Consultation",
    "ConsultationCenter",
    "ConsultationStep",
    "CriticalCall",
    "CriticalFinding",
    "DicomInstance",
    "DicomSeries",
    "DicomStudy",
    "EcgMeasurement",
    "Event",
    "EventTopic",
    "FeeLine",
    "FeeScheduleEntry",
    "ForwardDestination",
    "ForwardJob",
    "HL7DeadLetter",
    "HL7Destination",
    "HL7InboundMessage",
    "HL7OutboxItem",
    "Institution",
    "InstitutionAETitle",
    "Message",
    "Mpps",
    "Network",
    "NetworkMember",
    "Participant",
    "Patient",
    "PatientMerge",
    "PractitionerRecord",
    "RecognitionDecision",
    "RegistryRevision",
    "RegistryVersion",
    "Report",
    "Request",
    "RouteStep",
    "RoutingRule",
    "Token",
    "User",
    "UserCenter",
]
