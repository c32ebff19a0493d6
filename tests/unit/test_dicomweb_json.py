"""DICOM JSON of index rows (pure): PN component groups, value types, the attributes a level returns."""

from __future__ import annotations

from gateways.dicomweb.dicomjson import element, person_name, qido_object
from telenet.services.study_search import like_pattern

ROW = {
    "study_instance_uid": "1.2.3",
    "series_instance_uid": "1.2.3.4",
    "patient_name": "Zhang^San=张^三=zhang^san",
    "patient_id": "P1",
    "modalities": ["CT", "SR"],
    "series_count": 2,
    "instance_count": 7,
    "modality": "CT",
    "series_number": 3,
}


def test_person_name_groups() -> None:
    assert person_name("Zhang^San=张^三") == {"Alphabetic": "Zhang^San", "Ideographic": "张^三"}
    assert person_name("=张^三") == {"Ideographic": "张^三"}
    assert person_name("张三^") == {"Alphabetic": "张三^"}
    assert person_name("A=B=C") == {"Alphabetic": "A", "Ideographic": "B", "Phonetic": "C"}


def test_value_types() -> None:
    assert element("IS", 7) == {"vr": "IS", "Value": [7]}
    assert element("CS", ["CT", "SR"]) == {"vr": "CS", "Value": ["CT", "SR"]}
    assert element("DA", None) == {"vr": "DA"}
    assert element("PN", "") == {"vr": "PN"}


def test_levels_and_includefield() -> None:
    study = qido_object(ROW, "study", set(), "http://h/dicom-web/studies/1.2.3")
    assert study["00100010"]["Value"][0]["Phonetic"] == "zhang^san"
    assert study["00080061"]["Value"] == ["CT", "SR"] and study["00201206"]["Value"] == [2]
    assert "0020000E" not in study and "00080060" not in study
    assert study["00081190"]["Value"] == ["http://h/dicom-web/studies/1.2.3"]
    series = qido_object(ROW, "series", set(), None)
    assert series["0020000D"]["Value"] == ["1.2.3"] and series["00200011"]["Value"] == [3]
    assert "00100010" not in series
    assert qido_object(ROW, "series", {"PatientID"}, None)["00100020"]["Value"] == ["P1"]
    assert "00100010" in qido_object(ROW, "series", None, None)
    assert list(study) == sorted(study), "tags in ascending order"


def test_like_pattern_escapes_sql_wildcards() -> None:
    assert like_pattern("Zh*n?") == "Zh%n_"
    assert like_pattern("50%_a\\b") == "50\\%\\_a\\\\b"
