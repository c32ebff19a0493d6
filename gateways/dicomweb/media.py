"""Content negotiation for DICOMweb (PS3.18 8.7): the Accept header as media ranges with their ``type`` and
``transfer-syntax`` parameters and quality, best first; what each resource can answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from telenet.domain.errors import TelenetError

EXPLICIT_LE: Final = "1.2.840.10008.1.2.1"
IMPLICIT_LE: Final = "1.2.840.10008.1.2"
NATIVE: Final = frozenset({EXPLICIT_LE, IMPLICIT_LE})
DICOM_JSON: Final = "application/dicom+json"


class BadRequest(TelenetError):
    status = 400
    code = "bad-request"


class NotAcceptable(TelenetError):
    status = 406
    code = "not-acceptable"


class UnsupportedMediaType(TelenetError):
    status = 415
    code = "unsupported-media-type"


class PayloadTooLarge(TelenetError):
    status = 413
    code = "payload-too-large"


@dataclass(frozen=True)
class MediaRange:
    type: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def part_type(self) -> str | None:
        return self.params.get("type")

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")


def _split(text: str, sep: str) -> list[str]:
    """Split outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def parse_media_type(text: str) -> MediaRange:
    pieces = _split(text, ";")
    params: dict[str, str] = {}
    q = 1.0
    for piece in pieces[1:]:
        name, _, value = piece.strip().partition("=")
        name, value = name.strip().lower(), value.strip().strip('"')
        if name == "q":
            try:
                q = float(value)
            except ValueError:
                q = 0.0
        elif name:
            params[name] = value
    return MediaRange(pieces[0].strip().lower(), params, q)


def parse_accept(header: str | None) -> list[MediaRange]:
    """The ranges of an Accept header, best first (stable for equal quality); ``*/*`` when absent."""
    if not header or not header.strip():
        return [MediaRange("*/*")]
    ranges = [parse_media_type(item) for item in _split(header, ",") if item.strip()]
    ranges = [r for r in ranges if r.q > 0]
    return sorted(ranges, key=lambda r: -r.q)


def _wild(media: str, wanted: str) -> bool:
    if media in ("*/*", wanted):
        return True
    major, _, minor = media.partition("/")
    return minor == "*" and wanted.startswith(major + "/")


def negotiate_json(header: str | None) -> str:
    """QIDO-RS and metadata answer DICOM JSON only (``application/json`` is the same body)."""
    for media in parse_accept(header):
        if _wild(media.type, DICOM_JSON):
            return DICOM_JSON
        if media.type == "application/json":
            return "application/json"
    raise NotAcceptable("this resource answers application/dicom+json only")


def negotiate_multipart(header: str | None, part_type: str, stored: set[str], *, allow_images: bool = False) -> str:
    """The transfer syntax to send ``multipart/related; type=part_type`` parts in: the stored one when the
    client takes ``*`` (or names it); Explicit VR Little Endian by default, which native files can always be
    given. ``allow_images``: frames may also be asked for as ``type="image/*"`` with the stored syntax."""
    for media in parse_accept(header):
        if not (_wild(media.type, "multipart/related") or media.type == part_type):
            continue
        kind = media.part_type or part_type
        if kind != part_type and not (allow_images and kind.startswith("image/")) and kind not in ("*/*", "*"):
            continue
        asked = media.transfer_syntax or EXPLICIT_LE
        if asked == "*":
            return "*"
        if all(ts == asked or (asked in NATIVE and ts in NATIVE) for ts in stored):
            return asked  # every file is either in that syntax or re-encoded between the native ones
    raise NotAcceptable(
        f"no acceptable representation: stored as {', '.join(sorted(stored))}; ask for multipart/related; "
        f'type="{part_type}"; transfer-syntax=* to receive it as stored'
    )


def negotiate_image(header: str | None) -> str:
    """Rendered resources: image/jpeg (the default) or image/png."""
    for media in parse_accept(header):
        for kind in ("image/jpeg", "image/png"):
            if _wild(media.type, kind):
                return kind
    raise NotAcceptable("rendered resources are image/jpeg or image/png")
