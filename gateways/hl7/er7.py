"""ER7 (pipe-and-hat) basics shared by the inbound parser, the ACK and the ORU builders: character sets,
escaping, timestamps, the header read on raw bytes, hl7apy parsing into read-only segments, and the few
helpers that fill an hl7apy message.

Character sets follow MSH-18, read on the raw bytes before decoding: empty or ``UNICODE UTF-8`` (and the
common alias ``UTF-8``) -> utf-8, ``GB 18030-2000``/``GB18030`` -> gb18030, ``8859/1`` -> latin-1,
``ASCII`` -> ascii. Segments are split after decoding, so GB 18030 trail bytes that look like ``|`` do no
harm.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Literal, NamedTuple

import hl7apy
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.parser import parse_message

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = ("2.3.1", "2.4", "2.5", "2.5.1")
DEFAULT_VERSION = "2.5.1"

#: HL7 table 0357, message error condition codes.
ERROR_CODES: dict[int, str] = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    206: "Application record locked",
    207: "Application internal error",
}

CHARSETS = {
    "": "utf-8",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "GB 18030-2000": "gb18030",
    "GB18030": "gb18030",
    "GBK": "gbk",
    "8859/1": "latin-1",
    "ASCII": "ascii",
}
HL7_CHARSETS = {
    "utf-8": "UNICODE UTF-8",
    "gb18030": "GB 18030-2000",
    "gbk": "GBK",  # not in HL7 table 0211; what HIS vendors here send for GBK
    "latin-1": "8859/1",
    "ascii": "ASCII",
}
PEER_CHARSETS = {"UTF-8": "utf-8", "GB18030": "gb18030", "GBK": "gbk"}
"""The registry's names of a peer's character set, as Python codecs."""


class Enc(NamedTuple):
    field: str
    component: str
    repetition: str
    escape: str
    subcomponent: str


class Reject(Exception):
    def __init__(self, ack_code: Literal["AR", "AE"], code: int, location: str | None, reason: str) -> None:
        super().__init__(reason)
        self.ack_code: Literal["AR", "AE"] = ack_code
        self.code = code
        self.location = location
        self.reason = reason


@lru_cache(maxsize=8)
def _escape_re(esc: str) -> re.Pattern[str]:
    e = re.escape(esc)
    return re.compile(f"{e}([^{e}]*){e}")


def unescape(value: str, enc: Enc, charset: str) -> str:
    if enc.escape not in value:
        return value
    simple = {"F": enc.field, "S": enc.component, "T": enc.subcomponent, "R": enc.repetition}
    simple["E"] = enc.escape

    def sub(m: re.Match[str]) -> str:
        seq = m.group(1)
        if seq in simple:
            return simple[seq]
        if seq == ".br":
            return "\n"
        if seq[:1] == "X":
            try:
                return bytes.fromhex(seq[1:]).decode(charset, "replace")
            except ValueError:
                return m.group(0)
        return ""  # highlighting (H, N), formatting (.sp, .in ...) and charset switches are dropped

    return _escape_re(enc.escape).sub(sub, value)


def escape(value: str) -> str:
    """Escape text for a field built with the standard encoding characters; line breaks become spaces."""
    value = value.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
    value = value.replace("&", "\\T\\").replace("~", "\\R\\")
    return " ".join(value.splitlines())


_TS_RE = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?([+-]\d{4})?")


def parse_ts(value: str, location: str) -> datetime | None:
    """HL7 TS/DTM: naive unless the value carries an offset."""
    if not value:
        return None
    m = _TS_RE.fullmatch(value)
    try:
        if m is None:
            raise ValueError(value)
        y, mo, d, h, mi, s, frac, off = m.groups()
        tz = None
        if off:
            delta = timedelta(hours=int(off[1:3]), minutes=int(off[3:5]))
            tz = timezone(-delta if off[0] == "-" else delta)
        micro = int((frac or "0").ljust(6, "0"))
        return datetime(int(y), int(mo or 1), int(d or 1), int(h or 0), int(mi or 0), int(s or 0), micro, tz)
    except ValueError:
        raise Reject("AE", 102, location, f"{location} {value!r} is not an HL7 date/time") from None


def parse_date(value: str, location: str) -> date | None:
    """A full date, or None when empty or only the year (and month) is known."""
    ts = parse_ts(value, location)
    return ts.date() if ts is not None and len(value) >= 8 else None


def format_ts(value: datetime) -> str:
    return value.strftime("%Y%m%d%H%M%S") + (value.strftime("%z") if value.tzinfo else "")


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f·•]+")


def display_name(family: str, given: str) -> str:
    if family and given:
        if _CJK.fullmatch(family) and _CJK.fullmatch(given):
            return family + given
        return f"{given} {family}"
    return family or given


class Segment:
    """Read access to one parsed hl7apy segment: ``get(3, comp=1, sub=1, rep=0)`` -> unescaped str."""

    __slots__ = ("_charset", "_enc", "_er7", "_fields", "name")

    def __init__(self, segment: Any, enc: Enc, charset: str) -> None:
        self.name: str = segment.name
        self._enc = enc
        self._charset = charset
        self._fields: dict[int, list[Any]] = {}
        self._er7: dict[int, list[str]] = {}  # serialised lazily: to_er7 is slow and most fields unread
        for child in segment.children:
            if child.name:  # fields beyond the version's definition have no name
                self._fields.setdefault(int(child.name.rsplit("_", 1)[1]), []).append(child)

    def reps(self, n: int) -> int:
        return len(self._fields.get(n, ()))

    def get(self, n: int, comp: int = 1, sub: int = 1, rep: int = 0) -> str:
        values = self._er7.get(n)
        if values is None:
            values = self._er7[n] = [str(f.to_er7()) for f in self._fields.get(n, ())]
        if rep >= len(values):
            return ""
        parts = values[rep].split(self._enc.component)
        if comp > len(parts):
            return ""
        subs = parts[comp - 1].split(self._enc.subcomponent)
        if sub > len(subs):
            return ""
        return unescape(subs[sub - 1], self._enc, self._charset).strip()


# ------------------------------------------------------------------------------------ decode and split


@dataclass(frozen=True)
class Header:
    sending_application: str | None = None
    facility: str | None = None
    message_control_id: str | None = None
    version: str | None = None
    message_type: str | None = None
    charset: str | None = None


_BOM = b"\xef\xbb\xbf"


def _trim(raw: bytes) -> bytes:
    return raw.lstrip(b" \t\r\n\x00").removeprefix(_BOM).lstrip(b" \t\r\n")


def header_from_line(line: str, charset: str | None = None) -> Header:
    if not line.startswith("MSH") or len(line) < 4:
        return Header(charset=charset)
    fields = line.split(line[3])
    enc = fields[1] if len(fields) > 1 else ""
    comp = enc[0] if enc else "^"
    esc = enc[2] if len(enc) > 2 else "\\"
    e = Enc(line[3], comp, enc[1] if len(enc) > 1 else "~", esc, enc[3] if len(enc) > 3 else "&")

    def at(n: int, c: int = 1) -> str | None:
        parts = fields[n - 1].split(comp) if n - 1 < len(fields) else []
        value = unescape(parts[c - 1], e, charset or "utf-8").strip() if c <= len(parts) else ""
        return value or None

    code, event = at(9, 1), at(9, 2)
    mtype = f"{code}^{event}" if code and event else code
    return Header(at(3), at(4), at(10), at(12), mtype, charset)


def sniff(raw: bytes) -> Header:
    """Best-effort header of a message that may not decode, for the ACK of its rejection."""
    line = re.split(rb"[\r\n]", _trim(raw), maxsplit=1)[0]
    return header_from_line(line.decode("utf-8", "replace"))


def decode(raw: bytes, default: str | None = None) -> tuple[str, str]:
    """Return (text, python codec) after checking MSH-1, MSH-2 and MSH-18 on the raw bytes; a message
    without MSH-18 is read in ``default`` (the sending facility's registered set), else UTF-8."""
    data = _trim(raw)
    if not data.startswith(b"MSH"):
        raise Reject("AR", 100, "MSH", "message does not start with an MSH segment")
    if data[3:4] != b"|":
        raise Reject("AR", 102, "MSH-1", f"field separator {data[3:4]!r} is not '|'")
    fields = re.split(rb"[\r\n]", data, maxsplit=1)[0].split(b"|")
    enc = fields[1] if len(fields) > 1 else b""
    if len(enc) != 4 or len(set(enc)) != 4 or any(chr(c).isalnum() or not 0x21 <= c <= 0x7E for c in enc):
        raise Reject("AR", 102, "MSH-2", f"encoding characters {enc!r} are not four distinct symbols")
    msh18 = fields[17].split(enc[1:2])[0] if len(fields) > 17 else b""
    name = msh18.decode("ascii", "replace").strip().upper()
    codec = (default or "utf-8") if not name else CHARSETS.get(name)
    if codec is None:
        raise Reject("AR", 103, "MSH-18", f"character set {name!r} is not supported")
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as exc:
        raise Reject(
            "AR", 102, "MSH-18", f"bytes {exc.start}-{exc.end} do not decode as {codec} (MSH-18 {name!r})"
        ) from None
    return text, codec


_SEGMENT_END = re.compile(r"\r\n|\r|\n")


def split_lines(text: str) -> list[str]:
    """Segments, accepting CR (standard), CR LF, LF and any mix of them (a file edited on another system,
    then sent with a CR at its end): a field never holds a raw line break (it is escaped as ``\\.br\\``)."""
    return [p for p in _SEGMENT_END.split(text) if p.strip()]


_SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}")


@lru_cache(maxsize=512)
def _known_segment(name: str, version: str) -> bool:
    if name.startswith("Z"):
        return True
    try:
        hl7apy.load_reference(name, "Segment", version)
    except Exception:
        return False
    return True


def parse_segments(text: str, version: str, charset: str) -> list[Segment]:
    """Parse with hl7apy; segments unknown to the version are ignored, as HL7 asks receivers to."""
    kept: list[str] = []
    for i, line in enumerate(split_lines(text)):
        name = line[:3]
        if not _SEGMENT_NAME.fullmatch(name) or (len(line) > 3 and line[3] != "|"):
            raise Reject("AR", 100, None, f"line {i + 1} is not a segment: {line[:20]!r}")
        if name == "MSH" and i > 0:
            raise Reject("AR", 100, "MSH", "more than one MSH: send one message per frame")
        if _known_segment(name, version):
            kept.append(line)
        else:
            log.info("hl7: ignoring segment %s unknown in HL7 %s", name, version)
    try:
        message = parse_message("\r".join(kept), validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=False)
        enc_chars = message.encoding_chars
    except Exception as exc:  # hl7apy raises a zoo of exception types on bad input
        raise Reject("AR", 100, None, f"unparseable HL7: {type(exc).__name__}: {exc}") from None
    enc = Enc(
        enc_chars["FIELD"],
        enc_chars["COMPONENT"],
        enc_chars["REPETITION"],
        enc_chars["ESCAPE"],
        enc_chars["SUBCOMPONENT"],
    )
    return [Segment(s, enc, charset) for s in message.children]


# ------------------------------------------------------------------------------------ building


def outbound_charset(charset: str | None) -> tuple[str, str]:
    """(python codec, MSH-18 value) for an outbound message; utf-8 unless we know better."""
    codec = charset if charset in HL7_CHARSETS else "utf-8"
    return codec, HL7_CHARSETS[codec]


def set_field(seg: Any, n: int, er7: str | None) -> None:
    """Assign already-escaped ER7 text to field n (hl7apy parses it into components)."""
    if er7:
        setattr(seg, f"{seg.name.lower()}_{n}", er7)


def new_message(structure: str, version: str, msh: dict[int, str | None]) -> Any:
    m = Message(structure, version=version, validation_level=VALIDATION_LEVEL.TOLERANT)
    for n, value in msh.items():
        set_field(m.msh, n, value)
    return m


def first(segs: list[Segment], name: str) -> Segment | None:
    return next((s for s in segs if s.name == name), None)
