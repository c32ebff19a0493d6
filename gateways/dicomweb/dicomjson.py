"""The DICOM JSON model (PS3.18 F.2): index rows of QIDO-RS answers and stored datasets of WADO-RS metadata.

Person Name values carry their component groups as the standard says: ``Zhang^San=张^三`` becomes
``{"Alphabetic": "Zhang^San", "Ideographic": "张^三"}``. Large binary values of a stored dataset are not
inlined but named by a ``BulkDataURI``; PixelData points at the instance's ``bulkdata`` resource.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydicom import dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag

UTF8: Final = "ISO_IR 192"
BULK_THRESHOLD: Final = 1024
BINARY_VRS: Final = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
PIXEL_DATA: Final = 0x7FE00010


@dataclass(frozen=True)
class Attribute:
    """An attribute the index can answer: its tag, VR, level and the key of the service's row."""

    keyword: str
    tag: str
    vr: str
    level: str
    row_key: str | None


def _attributes() -> dict[str, Attribute]:
    table = [
        ("SpecificCharacterSet", "study", None),
        ("StudyDate", "study", "study_date"),
        ("StudyTime", "study", "study_time"),
        ("AccessionNumber", "study", "accession_number"),
        ("InstanceAvailability", "study", None),
        ("ModalitiesInStudy", "study", "modalities"),
        ("ReferringPhysicianName", "study", "referring_physician"),
        ("StudyDescription", "study", "study_description"),
        ("PatientName", "study", "patient_name"),
        ("PatientID", "study", "patient_id"),
        ("PatientBirthDate", "study", "patient_birth_date"),
        ("PatientSex", "study", "patient_sex"),
        ("StudyInstanceUID", "study", "study_instance_uid"),
        ("StudyID", "study", "study_id"),
        ("NumberOfStudyRelatedSeries", "study", "series_count"),
        ("NumberOfStudyRelatedInstances", "study", "instance_count"),
        ("Modality", "series", "modality"),
        ("SeriesDescription", "series", "series_description"),
        ("SeriesInstanceUID", "series", "series_instance_uid"),
        ("SeriesNumber", "series", "series_number"),
        ("BodyPartExamined", "series", "body_part"),
        ("NumberOfSeriesRelatedInstances", "series", "series_instance_count"),
        ("SOPClassUID", "instance", "sop_class_uid"),
        ("SOPInstanceUID", "instance", "sop_instance_uid"),
        ("InstanceNumber", "instance", "instance_number"),
        ("AvailableTransferSyntaxUID", "instance", "transfer_syntax_uid"),
    ]
    out = {}
    for keyword, level, key in table:
        tag = tag_for_keyword(keyword)
        assert tag is not None, keyword
        out[keyword] = Attribute(keyword, f"{tag:08X}", dictionary_VR(tag), level, key)
    return out


ATTRIBUTES: Final = _attributes()
BY_TAG: Final = {a.tag: a for a in ATTRIBUTES.values()}
RETRIEVE_URL_TAG: Final = "00081190"

_LEVEL_RANK: Final = {"study": 0, "series": 1, "instance": 2}


def keyword_of(name: str) -> str | None:
    """A query parameter name (keyword or 8 hex digits) as a DICOM keyword; None when it is neither."""
    if name in ATTRIBUTES:
        return name
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        attribute = BY_TAG.get(name.upper())
        if attribute is not None:
            return attribute.keyword
        return keyword_for_tag(int(name, 16)) or name.upper()
    return name if tag_for_keyword(name) is not None else None


# --------------------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------------------


def person_name(value: str) -> dict[str, str]:
    """``Alphabetic=Ideographic=Phonetic`` component groups as the DICOM JSON PN object."""
    groups = value.split("=")
    names = ("Alphabetic", "Ideographic", "Phonetic")
    return {name: group for name, group in zip(names, groups, strict=False) if group}


def element(vr: str, value: Any) -> dict[str, Any]:
    """One DICOM JSON attribute object; None or empty gives an attribute without a Value."""
    if value is None or value == "" or value == []:
        return {"vr": vr}
    values = value if isinstance(value, (list, tuple)) else [value]
    if vr == "PN":
        return {"vr": vr, "Value": [person_name(str(v)) for v in values]}
    if vr in ("IS", "SL", "UL", "US", "SS"):
        return {"vr": vr, "Value": [int(v) for v in values]}
    if vr in ("DS", "FL", "FD"):
        return {"vr": vr, "Value": [float(v) for v in values]}
    return {"vr": vr, "Value": [str(v) for v in values]}


def qido_object(
    row: Mapping[str, Any], level: str, include: Iterable[str] | None, retrieve_url: str | None
) -> dict[str, Any]:
    """A QIDO-RS match: the attributes of ``level`` and above that the level returns by default (and the
    study's when asked for), plus ``include`` (None: everything the index has)."""
    wanted = set(include) if include is not None else set(ATTRIBUTES)
    out: dict[str, Any] = {}
    for attribute in ATTRIBUTES.values():
        rank = _LEVEL_RANK[attribute.level]
        default = rank == _LEVEL_RANK[level] or attribute.keyword in ("StudyInstanceUID", "SeriesInstanceUID")
        if rank > _LEVEL_RANK[level] or not (default or attribute.keyword in wanted):
            continue
        if attribute.keyword == "SeriesInstanceUID" and level == "study":
            continue
        if attribute.keyword == "SpecificCharacterSet":
            value: Any = UTF8
        elif attribute.keyword == "InstanceAvailability":
            value = "ONLINE"
        else:
            value = row.get(attribute.row_key) if attribute.row_key else None
        out[attribute.tag] = element(attribute.vr, value)
    if retrieve_url:
        out[RETRIEVE_URL_TAG] = {"vr": "UR", "Value": [retrieve_url]}
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------------------------------
# Stored datasets (WADO-RS metadata)
# --------------------------------------------------------------------------------------------------


def read_header(path: str) -> Dataset:
    """The dataset with large values left on disk (deferred): parsing never loads pixel data."""
    return dcmread(path, defer_size=BULK_THRESHOLD)


def _raw(ds: Dataset, tag: int) -> Any:
    return ds.get_item(tag, keep_deferred=True)


def _vr(raw: Any, tag: int) -> str:
    if tag == PIXEL_DATA:
        return "OB"
    if raw.VR:
        return str(raw.VR)
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


def is_bulk(ds: Dataset, tag: int) -> bool:
    """PixelData always; otherwise a binary value longer than the threshold."""
    if tag == PIXEL_DATA:
        return True
    raw = _raw(ds, tag)
    if _vr(raw, tag) not in BINARY_VRS:
        return False
    length = raw.length if isinstance(raw, RawDataElement) else len(raw.value or b"")
    return int(length) > BULK_THRESHOLD


def metadata_object(ds: Dataset, bulk_uri: Callable[[str], str]) -> dict[str, Any]:
    """The dataset as DICOM JSON; each large top-level value (PixelData, waveforms, overlays, anything over
    1 KiB and binary) as a ``BulkDataURI`` ``bulk_uri(tag)``, nested values inline."""
    out: dict[str, Any] = {}
    for tag in ds.keys():
        hex_tag = f"{int(tag):08X}"
        if int(tag) >> 16 == 0x0002:
            continue
        if is_bulk(ds, int(tag)):
            vr = _vr(_raw(ds, int(tag)), int(tag))
            if int(tag) == PIXEL_DATA and not encapsulated(ds):
                vr = "OW" if int(ds.get("BitsAllocated", 8)) > 8 else "OB"
            out[hex_tag] = {"vr": vr, "BulkDataURI": bulk_uri(hex_tag.lower())}
            continue
        elem = ds[tag]
        try:
            out[hex_tag] = elem.to_json_dict(bulk_data_element_handler=None, bulk_data_threshold=1 << 30)
        except (ValueError, TypeError):
            out[hex_tag] = {"vr": elem.VR}
    if "00080005" in out:
        out["00080005"] = {"vr": "CS", "Value": [UTF8]}
    return out


def encapsulated(ds: Dataset) -> bool:
    """Whether the pixel data is encapsulated (a compressed transfer syntax)."""
    ts = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
    return bool(ts is not None and ts.is_encapsulated)


def value_location(ds: Dataset, hex_tag: str) -> tuple[int, int, bool] | None:
    """Where a top-level value sits in the file: (offset, length, undefined length); None when absent."""
    tag = Tag(int(hex_tag, 16))
    if tag not in ds:
        return None
    raw = _raw(ds, int(tag))
    if not isinstance(raw, RawDataElement) or raw.value_tell is None:
        return None
    return int(raw.value_tell), int(raw.length), raw.length == 0xFFFFFFFF
