"""Pure mapping between DICOM datasets and the service layer's records: no I/O, no threads, no database.

Text is decoded with the dataset's SpecificCharacterSet by pydicom (ISO_IR 192 is UTF-8, GB18030 is
GB18030, GBK is GBK); worklist and C-FIND answers go out in the set the query names, else the calling
institution's registered set (UTF-8, ``ISO_IR 192``, by default), so Chinese names survive both ways.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from gateways.dicom.status import BadDataset
from gateways.dicom.storage import check_uid
from telenet.domain.identity import PatientFacts, parse_compact_date
from telenet.services.modality import StudyQuery, WorklistQuery, parse_date_range
from telenet.services.mpps import MppsRecord
from telenet.services.studies import EcgSummary, InstanceRecord

UTF8: Final = "ISO_IR 192"


def text(ds: Dataset, keyword: str) -> str | None:
    """An attribute as decoded text (multi-values joined with a backslash), None when absent or empty."""
    try:
        value = ds.get(keyword)
    except (ValueError, LookupError, UnicodeError) as exc:
        raise BadDataset(f"{keyword} cannot be decoded: {exc}") from exc
    if value is None or value == "":
        return None
    if isinstance(value, (list, MultiValue)):
        joined = "\\".join(str(v) for v in value)
        return joined or None
    result = str(value).strip()
    return result or None


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def instance_record(
    ds: Dataset,
    *,
    path: str,
    size_bytes: int,
    transfer_syntax_uid: str,
    affected_sop_instance_uid: str | None = None,
    ecg: EcgSummary | None = None,
) -> InstanceRecord:
    """What the index keeps of a received instance. Raises BadDataset when an identifying UID is missing."""
    sop_uid = text(ds, "SOPInstanceUID")
    if not sop_uid:
        raise BadDataset("the dataset has no SOP Instance UID (0008,0018)")
    sop_uid = check_uid(sop_uid, "SOPInstanceUID")
    if affected_sop_instance_uid and affected_sop_instance_uid.strip() != sop_uid:
        raise BadDataset("SOP Instance UID differs from the request's Affected SOP Instance UID")
    sop_class = text(ds, "SOPClassUID")
    if not sop_class:
        raise BadDataset("the dataset has no SOP Class UID (0008,0016)")
    study_uid = text(ds, "StudyInstanceUID")
    series_uid = text(ds, "SeriesInstanceUID")
    if not study_uid or not series_uid:
        raise BadDataset("the dataset has no Study or Series Instance UID")
    charset = ds.get("SpecificCharacterSet")
    if isinstance(charset, (list, MultiValue)):
        charset = "\\".join(str(c) for c in charset)
    return InstanceRecord(
        sop_instance_uid=sop_uid,
        sop_class_uid=check_uid(sop_class, "SOPClassUID"),
        transfer_syntax_uid=transfer_syntax_uid,
        study_instance_uid=check_uid(study_uid, "StudyInstanceUID"),
        series_instance_uid=check_uid(series_uid, "SeriesInstanceUID"),
        path=path,
        size_bytes=size_bytes,
        accession_number=text(ds, "AccessionNumber"),
        patient_name=text(ds, "PatientName"),
        patient_id=text(ds, "PatientID"),
        patient_birth_date=text(ds, "PatientBirthDate"),
        patient_sex=text(ds, "PatientSex"),
        study_date=text(ds, "StudyDate"),
        study_time=text(ds, "StudyTime"),
        study_id=text(ds, "StudyID"),
        study_description=text(ds, "StudyDescription"),
        referring_physician=text(ds, "ReferringPhysicianName"),
        operators_name=text(ds, "OperatorsName"),
        modality=text(ds, "Modality"),
        series_number=_int(ds, "SeriesNumber"),
        series_description=text(ds, "SeriesDescription"),
        body_part=text(ds, "BodyPartExamined"),
        instance_number=_int(ds, "InstanceNumber"),
        character_set=str(charset) if charset else None,
        ecg=ecg,
    )


# --------------------------------------------------------------------------------------------------
# Modality Worklist
# --------------------------------------------------------------------------------------------------


def _step(identifier: Dataset) -> Dataset:
    steps = identifier.get("ScheduledProcedureStepSequence")
    return steps[0] if steps else Dataset()


def worklist_query(identifier: Dataset) -> WorklistQuery:
    step = _step(identifier)
    low, high = parse_date_range(text(step, "ScheduledProcedureStepStartDate"))
    return WorklistQuery(
        accession_number=text(identifier, "AccessionNumber"),
        patient_id=text(identifier, "PatientID"),
        patient_name=text(identifier, "PatientName"),
        modality=text(step, "Modality"),
        date_from=low,
        date_to=high,
        station_ae=text(step, "ScheduledStationAETitle"),
    )


DICOM_TERMS: Final = {"UTF-8": UTF8, "GB18030": "GB18030", "GBK": "GBK"}


def answer_charset(identifier: Dataset, configured: str = "UTF-8") -> str:
    """The SpecificCharacterSet of an answer (PS3.4 C.2.2.2.9 / K.6.1.2): the set the query itself names
    when it is one the hub writes (UTF-8, GB18030, GBK), else the set registered for the calling AE's
    institution."""
    asked = identifier.get("SpecificCharacterSet")
    values = [str(v) for v in asked] if isinstance(asked, (list, MultiValue)) else [str(asked)] if asked else []
    for value in values:
        if value in DICOM_TERMS.values():
            return value
    return DICOM_TERMS.get(configured, UTF8)


def assume_charset(ds: Dataset, registered: str | None) -> None:
    """A dataset that names no SpecificCharacterSet is read in the set its sender is registered with (PS3.3
    C.12.1.1.2: absent means the default repertoire, which cannot carry Chinese; a modality registered as GBK
    or GB18030 sends those bytes without saying so). Call before any text attribute is read."""
    if registered not in DICOM_TERMS or "SpecificCharacterSet" in ds:
        return
    term = DICOM_TERMS[registered]
    ds.SpecificCharacterSet = term
    # pydicom decodes a dataset read from bytes in the set it was read with, not the one it names later.
    implicit, little = ds.original_encoding
    ds.set_original_encoding(implicit, little, convert_encodings(term))


def worklist_response(item: Mapping[str, Any], identifier: Dataset, charset: str = UTF8) -> Dataset:
    """A worklist match with the attributes the query asked for (and the identifying ones anyway), its
    text to be encoded in ``charset`` (a DICOM term)."""
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    values: dict[str, Any] = {
        "AccessionNumber": item["accession_number"],
        "PatientName": item["patient_name"],
        "PatientID": item["patient_id"],
        "PatientBirthDate": item["patient_birth_date"] or "",
        "PatientSex": item["patient_sex"] or "",
        "StudyInstanceUID": item["study_instance_uid"],
        "RequestedProcedureID": str(item["request_id"]),
        "RequestedProcedureDescription": (item["procedure_description"] or "")[:64],
        "RequestedProcedurePriority": item["priority"],
        "ReasonForTheRequestedProcedure": (item["reason"] or "")[:64],
        "RequestingPhysician": item["requesting_physician"] or "",
        "ReferringPhysicianName": item["requesting_physician"] or "",
        "InstitutionName": (item["requesting_institution"] or "")[:64],
        "AdmissionID": "",
    }
    always = ("AccessionNumber", "PatientName", "PatientID", "StudyInstanceUID")
    for keyword, value in values.items():
        if keyword in always or keyword in identifier:
            setattr(ds, keyword, value)
    step = Dataset()
    step_values: dict[str, Any] = {
        "Modality": item["modality"] or "",
        "ScheduledStationAETitle": item["station_ae"],
        "ScheduledProcedureStepStartDate": item["scheduled_date"],
        "ScheduledProcedureStepStartTime": item["scheduled_time"],
        "ScheduledProcedureStepID": str(item["request_id"]),
        "ScheduledProcedureStepDescription": (item["procedure_description"] or "")[:64],
        "ScheduledPerformingPhysicianName": "",
        "ScheduledProcedureStepStatus": "SCHEDULED",
    }
    asked = _step(identifier)
    for keyword, value in step_values.items():
        if keyword in asked or keyword in ("Modality", "ScheduledProcedureStepStartDate", "ScheduledStationAETitle"):
            setattr(step, keyword, value)
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds


# --------------------------------------------------------------------------------------------------
# MPPS
# --------------------------------------------------------------------------------------------------


def referenced_instances(ds: Dataset) -> tuple[str, ...]:
    """Every SOP Instance UID listed in the Performed Series Sequence (images and non-image objects)."""
    uids: list[str] = []
    for series in ds.get("PerformedSeriesSequence") or []:
        for seq in ("ReferencedImageSequence", "ReferencedNonImageCompositeSOPInstanceSequence"):
            for ref in series.get(seq) or []:
                uid = text(ref, "ReferencedSOPInstanceUID")
                if uid:
                    uids.append(uid)
    return tuple(dict.fromkeys(uids))


def mpps_record(sop_instance_uid: str, ds: Dataset) -> MppsRecord:
    steps = ds.get("ScheduledStepAttributesSequence") or []
    first = steps[0] if steps else Dataset()
    status = text(ds, "PerformedProcedureStepStatus") or ""
    return MppsRecord(
        sop_instance_uid=check_uid(sop_instance_uid, "Affected SOP Instance UID"),
        status=status.upper(),
        study_instance_uid=text(first, "StudyInstanceUID"),
        accession_number=text(first, "AccessionNumber"),
        modality=text(ds, "Modality"),
        referenced_sop_uids=referenced_instances(ds),
        discontinuation_reason=_discontinuation_reason(ds),
        patient=PatientFacts(
            text(ds, "PatientID"),
            text(ds, "PatientName"),
            parse_compact_date(text(ds, "PatientBirthDate")),
            text(ds, "PatientSex"),
        ),
    )


def _discontinuation_reason(ds: Dataset) -> str | None:
    """Code Meaning (else the code) of the Performed Procedure Step Discontinuation Reason Code Sequence."""
    for item in ds.get("PerformedProcedureStepDiscontinuationReasonCodeSequence") or []:
        meaning, code = text(item, "CodeMeaning"), text(item, "CodeValue")
        if meaning or code:
            return f"{meaning} ({code})" if meaning and code else meaning or code
    return None


# --------------------------------------------------------------------------------------------------
# Study Root query / retrieve
# --------------------------------------------------------------------------------------------------


def _uids(ds: Dataset, keyword: str) -> tuple[str, ...]:
    value = ds.get(keyword)
    if not value:
        return ()
    items: Iterable[Any] = value if isinstance(value, (list, MultiValue)) else str(value).split("\\")
    return tuple(str(v).strip() for v in items if str(v).strip() and str(v).strip() != "*")


def study_query(identifier: Dataset) -> StudyQuery:
    level = (text(identifier, "QueryRetrieveLevel") or "").upper()
    low, high = parse_date_range(text(identifier, "StudyDate"))
    return StudyQuery(
        level=level,
        study_uids=_uids(identifier, "StudyInstanceUID"),
        series_uids=_uids(identifier, "SeriesInstanceUID"),
        sop_uids=_uids(identifier, "SOPInstanceUID"),
        accession_number=text(identifier, "AccessionNumber"),
        patient_id=text(identifier, "PatientID"),
        patient_name=text(identifier, "PatientName"),
        modality=text(identifier, "ModalitiesInStudy") or text(identifier, "Modality"),
        date_from=low,
        date_to=high,
    )


def find_response(values: Mapping[str, Any], identifier: Dataset, charset: str = UTF8) -> Dataset:
    """A match carrying the keys the query asked for, plus the level's unique keys, in ``charset``."""
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.QueryRetrieveLevel = text(identifier, "QueryRetrieveLevel") or "STUDY"
    unique = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    for keyword, value in values.items():
        if keyword == "SpecificCharacterSet":
            continue
        if keyword in unique or keyword in identifier:
            if value is None:
                value = ""
            setattr(ds, keyword, value)
    return ds
