"""DICOMweb content negotiation (pure): Accept headers with quality, ``type`` and ``transfer-syntax``."""

from __future__ import annotations

import pytest

from gateways.dicomweb.media import (
    EXPLICIT_LE,
    IMPLICIT_LE,
    NotAcceptable,
    negotiate_image,
    negotiate_json,
    negotiate_multipart,
    parse_accept,
)

JPEG = "1.2.840.10008.1.2.4.50"
DICOM = "application/dicom"


@pytest.mark.parametrize(
    ("accept", "stored", "expected"),
    [
        (None, {EXPLICIT_LE}, EXPLICIT_LE),
        ('multipart/related; type="application/dicom"', {IMPLICIT_LE}, EXPLICIT_LE),
        ('multipart/related; type="application/dicom"; transfer-syntax=*', {JPEG}, "*"),
        (f"multipart/related; type=application/dicom; transfer-syntax={JPEG}", {JPEG}, JPEG),
        ("*/*", {EXPLICIT_LE, IMPLICIT_LE}, EXPLICIT_LE),
        (
            f'multipart/related; type="application/dicom"; transfer-syntax={JPEG}; q=0.5, */*',
            {EXPLICIT_LE},
            EXPLICIT_LE,
        ),
    ],
)
def test_retrieve_syntax(accept: str | None, stored: set[str], expected: str) -> None:
    assert negotiate_multipart(accept, DICOM, stored) == expected


@pytest.mark.parametrize(
    ("accept", "stored"),
    [
        ('multipart/related; type="application/dicom"', {JPEG}),
        ('multipart/related; type="application/dicom"', {JPEG, EXPLICIT_LE}),
        (f'multipart/related; type="application/dicom"; transfer-syntax={JPEG}', {EXPLICIT_LE}),
        ('multipart/related; type="application/dicom+json"', {EXPLICIT_LE}),
        ("application/json", {EXPLICIT_LE}),
        ('multipart/related; type="application/dicom"; transfer-syntax=*; q=0', {EXPLICIT_LE}),
    ],
)
def test_retrieve_not_acceptable(accept: str, stored: set[str]) -> None:
    with pytest.raises(NotAcceptable):
        negotiate_multipart(accept, DICOM, stored)


def test_frames_may_be_asked_as_images_in_the_stored_syntax() -> None:
    accept = f'multipart/related; type="image/jpeg"; transfer-syntax={JPEG}'
    assert negotiate_multipart(accept, "application/octet-stream", {JPEG}, allow_images=True) == JPEG
    with pytest.raises(NotAcceptable):
        negotiate_multipart(accept, "application/octet-stream", {JPEG})


def test_json_image_and_quality_order() -> None:
    assert negotiate_json("application/dicom+json") == "application/dicom+json"
    assert negotiate_json("application/json") == "application/json"
    assert negotiate_json(None) == "application/dicom+json"
    with pytest.raises(NotAcceptable):
        negotiate_json("application/dicom+xml")
    assert negotiate_image("image/png;q=0.9, image/jpeg;q=0.5") == "image/png"
    assert negotiate_image("image/*") == "image/jpeg"
    assert [m.type for m in parse_accept("a/b;q=0.1, c/d, e/f;q=0.5")] == ["c/d", "e/f", "a/b"]
