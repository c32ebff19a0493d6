"""HL7 v2 mapping with hl7apy: inbound bytes to plain dataclasses, ACK and ORU^R01 back to bytes.

Pure and picklable (bytes, str and frozen dataclasses in and out; no sockets, no database) so the
server can run it in a process pool: hl7apy is CPU-bound. Inbound problems never raise: they come
back as :class:`Rejected` with the ACK code, the table 0357 error code and the field to blame.

Field map, in order of preference where several fields can carry a value:

=====================  ==============================================================================
patient id             first PID-3 repetition whose CX-5 is not ``NNCHN`` (CX-1)
national id            PID-3 repetition with CX-5 ``NNCHN``, else PID-19
name                   PID-5 first repetition: family XPN-1, given XPN-2; ``display`` joins CJK names
                       without a space (张三), others as "Given Family"
sex / birth date       PID-8 (M F O U; GB/T 2261.1 1/2/0/9 accepted) / PID-7 (YYYYMMDD, else None)
accession number       OMI: IPC-1, ORC-2, OBR-2, ORC-3, OBR-3; ORM: ORC-2, OBR-2, ORC-3, OBR-3
modality               IPC-5 (OMI), OBR-24 (DICOM modality or table 0074 section), prefix of OBR-4
                       code (``DX0001``, ``CT-HEAD``); RAD/RX alone means DX
kind                   modality ECG (OBR-24 EC/ECG/EKG) -> "ecg", any imaging modality -> "imaging"
procedure              OBR-4 (code CE-1, text CE-2)
body part              OBR-15 SPS-4 body site (code, text), SPS-1 (code, text), else for imaging
                       the OBR-4 text
priority               TQ1-9 (2.5+), OBR-27.6, ORC-7.6; S/STAT -> stat, A/ASAP/U/URGENT -> urgent,
                       anything else or nothing -> routine
clinical question      OBR-13, else OBR-31 (text, else code; repetitions joined by "; ")
ordering clinician     ORC-12, else OBR-16 (XCN-1 id, XCN-2 family, XCN-3 given)
consent                CON segment: given_by CON-24 (consenter, else the patient), relationship
                       CON-25, given_at CON-13 decision time, else CON-12 discussion, else CON-14
                       effective; mode CON-10 (W/V/T); status CON-11; granted unless R/X/B
=====================  ==============================================================================

Character sets follow MSH-18, read on the raw bytes before decoding: empty or ``UNICODE UTF-8``
(and the common alias ``UTF-8``) -> utf-8, ``GB 18030-2000``/``GB18030`` -> gb18030, ``8859/1`` ->
latin-1, ``ASCII`` -> ascii. Segments are split after decoding, so GB 18030 trail bytes that look
like ``|`` do no harm.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
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

AckCode = Literal["AA", "AE", "AR", "CA", "CE", "CR"]
Priority = Literal["stat", "urgent", "routine"]
Kind = Literal["imaging", "ecg"]

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

_CHARSETS = {
    "": "utf-8",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
    "GB 18030-2000": "gb18030",
    "GB18030": "gb18030",
    "8859/1": "latin-1",
    "ASCII": "ascii",
}
_HL7_CHARSET = {"utf-8": "UNICODE UTF-8", "gb18030": "GB 18030-2000", "latin-1": "8859/1", "ascii": "ASCII"}

# ---------------------------------------------------------------------------------------------- types


@dataclass(frozen=True)
class PatientData:
    id: str
    family: str
    given: str
    display: str
    sex: str  # M F O U
    birth_date: date | None
    national_id: str | None = None


@dataclass(frozen=True)
class Clinician:
    id: str | None
    name: str


@dataclass(frozen=True)
class Consent:
    given_by: str
    given_at: datetime | None
    relationship: str | None = None  # CON-25, table 0548
    mode: str | None = None  # CON-10: W written, V verbal, T telephone
    status: str | None = None  # CON-11: A active, L limited, R refused, X rescinded, B bypassed
    granted: bool = True


@dataclass(frozen=True)
class PatientUpdate:
    facility: str
    message_control_id: str
    version: str
    patient: PatientData
    message_type: str  # "ADT^A04" | "ADT^A08"
    sending_application: str = ""
    charset: str = "utf-8"


@dataclass(frozen=True)
class NewOrder:
    facility: str
    message_control_id: str
    version: str
    patient: PatientData
    accession_number: str
    kind: Kind
    modality: str  # DICOM modality: DX, CT, ..., ECG
    procedure_code: str
    procedure_text: str
    body_part: str | None
    priority: Priority
    clinical_question: str | None
    ordering_clinician: Clinician | None
    consent: Consent | None
    placer_order_number: str | None
    filler_order_number: str | None
    message_type: str  # "ORM^O01" | "OMI^O23"
    sending_application: str = ""
    charset: str = "utf-8"


@dataclass(frozen=True)
class CancelOrder:
    facility: str
    message_control_id: str
    version: str
    accession_number: str
    patient: PatientData | None
    message_type: str
    sending_application: str = ""
    charset: str = "utf-8"


@dataclass(frozen=True)
class ErrorInfo:
    """One ERR segment: a table 0357 code, the field to blame ("PID-3", "MSH-4", "ORC") and a text."""

    code: int
    location: str | None = None
    text: str | None = None
    severity: Literal["E", "W", "I"] = "E"


@dataclass(frozen=True)
class Rejected:
    """An inbound message we answer with AR (unparseable or unsupported) or AE (valid, not acceptable).

    Header fields are whatever could be read, even from a broken message, so the ACK can echo MSH-10.
    ``raw_text`` is the decoded message, None when the bytes did not decode.
    """

    ack_code: Literal["AR", "AE"]
    reason: str
    error_location: str | None
    message_control_id: str | None
    facility: str | None
    version: str | None
    raw_text: str | None
    error_code: int = 207
    message_type: str | None = None
    sending_application: str | None = None
    charset: str | None = None

    @property
    def error(self) -> ErrorInfo:
        return ErrorInfo(code=self.error_code, location=self.error_location, text=self.reason)


Inbound = PatientUpdate | NewOrder | CancelOrder | Rejected


@dataclass(frozen=True)
class ReportResult:
    """What goes back to the requesting HIS as ORU^R01.

    ``ecg`` keys (all optional): rate_bpm, pr_ms, qrs_ms, qt_ms, qtc_ms, axis_deg (numbers) and
    rhythm (text). ``status`` is F for a final report, C for a correction or addendum.
    """

    accession_number: str
    patient: PatientData
    procedure_code: str
    procedure_text: str
    findings: str
    impression: str
    signer_name: str
    signer_id: str
    signed_at: datetime
    status: Literal["F", "C"] = "F"
    critical: bool = False
    critical_items: list[str] = field(default_factory=list)
    addendum_text: str | None = None
    ecg: dict[str, Any] | None = None
    observed_at: datetime | None = None
    placer_order_number: str | None = None  # the HIS's own order number; defaults to the accession
    modality: str | None = None


@dataclass(frozen=True)
class AckInfo:
    ack_code: str
    control_id_acked: str
    text: str | None
    error_code: int | None = None
    message_control_id: str | None = None


class InvalidAck(ValueError):
    """The peer's answer is not an HL7 ACK we can read."""


# ----------------------------------------------------------------------------------------- ER7 basics


class _Enc(NamedTuple):
    field: str
    component: str
    repetition: str
    escape: str
    subcomponent: str


class _Reject(Exception):
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


def _unescape(value: str, enc: _Enc, charset: str) -> str:
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


def _escape(value: str) -> str:
    """Escape text for a field built with the standard encoding characters; line breaks become spaces."""
    value = value.replace("\\", "\\E\\").replace("|", "\\F\\").replace("^", "\\S\\")
    value = value.replace("&", "\\T\\").replace("~", "\\R\\")
    return " ".join(value.splitlines())


_TS_RE = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?([+-]\d{4})?")


def _parse_ts(value: str, location: str) -> datetime | None:
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
        raise _Reject("AE", 102, location, f"{location} {value!r} is not an HL7 date/time") from None


def _parse_date(value: str, location: str) -> date | None:
    """A full date, or None when empty or only the year (and month) is known."""
    ts = _parse_ts(value, location)
    return ts.date() if ts is not None and len(value) >= 8 else None


def _format_ts(value: datetime) -> str:
    return value.strftime("%Y%m%d%H%M%S") + (value.strftime("%z") if value.tzinfo else "")


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f·•]+")


def _display_name(family: str, given: str) -> str:
    if family and given:
        if _CJK.fullmatch(family) and _CJK.fullmatch(given):
            return family + given
        return f"{given} {family}"
    return family or given


class _Seg:
    """Read access to one parsed hl7apy segment: ``get(3, comp=1, sub=1, rep=0)`` -> unescaped str."""

    __slots__ = ("_charset", "_enc", "_er7", "_fields", "name")

    def __init__(self, segment: Any, enc: _Enc, charset: str) -> None:
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
        return _unescape(subs[sub - 1], self._enc, self._charset).strip()


# ------------------------------------------------------------------------------------ decode and split


@dataclass(frozen=True)
class _Header:
    sending_application: str | None = None
    facility: str | None = None
    message_control_id: str | None = None
    version: str | None = None
    message_type: str | None = None
    charset: str | None = None


_BOM = b"\xef\xbb\xbf"


def _trim(raw: bytes) -> bytes:
    return raw.lstrip(b" \t\r\n\x00").removeprefix(_BOM).lstrip(b" \t\r\n")


def _header_from_line(line: str, charset: str | None = None) -> _Header:
    if not line.startswith("MSH") or len(line) < 4:
        return _Header(charset=charset)
    fields = line.split(line[3])
    enc = fields[1] if len(fields) > 1 else ""
    comp = enc[0] if enc else "^"
    esc = enc[2] if len(enc) > 2 else "\\"
    e = _Enc(line[3], comp, enc[1] if len(enc) > 1 else "~", esc, enc[3] if len(enc) > 3 else "&")

    def at(n: int, c: int = 1) -> str | None:
        parts = fields[n - 1].split(comp) if n - 1 < len(fields) else []
        value = _unescape(parts[c - 1], e, charset or "utf-8").strip() if c <= len(parts) else ""
        return value or None

    code, event = at(9, 1), at(9, 2)
    mtype = f"{code}^{event}" if code and event else code
    return _Header(at(3), at(4), at(10), at(12), mtype, charset)


def _sniff(raw: bytes) -> _Header:
    """Best-effort header of a message that may not decode, for the ACK of its rejection."""
    line = re.split(rb"[\r\n]", _trim(raw), maxsplit=1)[0]
    return _header_from_line(line.decode("utf-8", "replace"))


def _decode(raw: bytes) -> tuple[str, str]:
    """Return (text, python codec) after checking MSH-1, MSH-2 and MSH-18 on the raw bytes."""
    data = _trim(raw)
    if not data.startswith(b"MSH"):
        raise _Reject("AR", 100, "MSH", "message does not start with an MSH segment")
    if data[3:4] != b"|":
        raise _Reject("AR", 102, "MSH-1", f"field separator {data[3:4]!r} is not '|'")
    fields = re.split(rb"[\r\n]", data, maxsplit=1)[0].split(b"|")
    enc = fields[1] if len(fields) > 1 else b""
    if len(enc) != 4 or len(set(enc)) != 4 or any(chr(c).isalnum() or not 0x21 <= c <= 0x7E for c in enc):
        raise _Reject("AR", 102, "MSH-2", f"encoding characters {enc!r} are not four distinct symbols")
    msh18 = fields[17].split(enc[1:2])[0] if len(fields) > 17 else b""
    name = msh18.decode("ascii", "replace").strip().upper()
    codec = _CHARSETS.get(name)
    if codec is None:
        raise _Reject("AR", 103, "MSH-18", f"character set {name!r} is not supported")
    try:
        text = data.decode(codec)
    except UnicodeDecodeError as exc:
        raise _Reject(
            "AR", 102, "MSH-18", f"bytes {exc.start}-{exc.end} do not decode as {codec} (MSH-18 {name!r})"
        ) from None
    return text, codec


def _lines(text: str) -> list[str]:
    """Segments, accepting CR (standard), CR LF and, in a message with no CR at all, LF."""
    if "\r" in text:
        parts = text.replace("\r\n", "\r").split("\r")
    else:
        parts = text.split("\n")
    return [p for p in (p.rstrip("\n") for p in parts) if p.strip()]


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


def _parse(text: str, version: str, charset: str) -> list[_Seg]:
    """Parse with hl7apy; segments unknown to the version are ignored, as HL7 asks receivers to."""
    kept: list[str] = []
    for i, line in enumerate(_lines(text)):
        name = line[:3]
        if not _SEGMENT_NAME.fullmatch(name) or (len(line) > 3 and line[3] != "|"):
            raise _Reject("AR", 100, None, f"line {i + 1} is not a segment: {line[:20]!r}")
        if name == "MSH" and i > 0:
            raise _Reject("AR", 100, "MSH", "more than one MSH: send one message per frame")
        if _known_segment(name, version):
            kept.append(line)
        else:
            log.info("hl7: ignoring segment %s unknown in HL7 %s", name, version)
    try:
        message = parse_message("\r".join(kept), validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=False)
        enc_chars = message.encoding_chars
    except Exception as exc:  # hl7apy raises a zoo of exception types on bad input
        raise _Reject("AR", 100, None, f"unparseable HL7: {type(exc).__name__}: {exc}") from None
    enc = _Enc(
        enc_chars["FIELD"],
        enc_chars["COMPONENT"],
        enc_chars["REPETITION"],
        enc_chars["ESCAPE"],
        enc_chars["SUBCOMPONENT"],
    )
    return [_Seg(s, enc, charset) for s in message.children]


# --------------------------------------------------------------------------------------------- inbound

_ADT_EVENTS = {"A04", "A08"}
_ORDER_TYPES = {("ORM", "O01"), ("OMI", "O23")}

_DICOM_MODALITIES = "CR DX CT MR US MG XA RF NM PT IO PX OT ES XC OP".split()
_MODALITY_CODES: dict[str, str] = {m: m for m in _DICOM_MODALITIES}
_MODALITY_CODES.update(
    {"DR": "DX", "ECG": "ECG", "EC": "ECG", "EKG": "ECG", "NMR": "MR", "OUS": "US", "VUS": "US"}
    | {"CUS": "US", "NMS": "NM", "XRC": "XA", "RAD": "", "RX": ""}  # "" = radiology, modality unknown
)
_MODALITY_PREFIX = re.compile(r"(ECG|EKG|CR|DX|DR|CT|MR|US|MG|XA|RF|NM|PT)(?![A-Z])")
_PRIORITIES: dict[str, Priority] = {"S": "stat", "STAT": "stat", "A": "urgent", "ASAP": "urgent"}
_PRIORITIES |= {"U": "urgent", "URGENT": "urgent"}
_SEXES = {"M": "M", "F": "F", "O": "O", "U": "U", "A": "O", "N": "U", "1": "M", "2": "F", "0": "U", "9": "U"}


def parse_inbound(raw: bytes) -> Inbound:
    """Map one inbound message (an MLLP payload) to a dataclass; never raises."""
    head = _sniff(raw)
    text: str | None = None
    try:
        text, charset = _decode(raw)
        head = _header_from_line(_lines(text)[0], charset)
        return _map(text, head, charset)
    except _Reject as r:
        return Rejected(
            ack_code=r.ack_code,
            reason=r.reason,
            error_location=r.location,
            message_control_id=head.message_control_id,
            facility=head.facility,
            version=head.version,
            raw_text=text,
            error_code=r.code,
            message_type=head.message_type,
            sending_application=head.sending_application,
            charset=head.charset,
        )
    except Exception as exc:
        log.exception("hl7: internal error mapping message %s", head.message_control_id)
        return Rejected(
            "AE", f"internal error: {type(exc).__name__}", None, head.message_control_id, head.facility,
            head.version, text, 207, head.message_type, head.sending_application, head.charset,
        )  # fmt: skip


def _map(text: str, head: _Header, charset: str) -> Inbound:
    code, _, event = (head.message_type or "").partition("^")
    version = head.version or ""
    if not code:
        raise _Reject("AR", 101, "MSH-9", "MSH-9 message type missing")
    if not version:
        raise _Reject("AR", 101, "MSH-12", "MSH-12 version id missing")
    if version not in SUPPORTED_VERSIONS:
        raise _Reject("AR", 203, "MSH-12", f"HL7 version {version} not supported ({', '.join(SUPPORTED_VERSIONS)})")
    if not ((code == "ADT" and event in _ADT_EVENTS) or (code, event) in _ORDER_TYPES):
        if code in ("ADT", "ORM", "OMI"):
            raise _Reject("AR", 201, "MSH-9", f"event {head.message_type} not supported")
        raise _Reject("AR", 200, "MSH-9", f"message type {head.message_type} not supported")
    segs = _parse(text, version, charset)
    if not head.message_control_id:
        raise _Reject("AE", 101, "MSH-10", "MSH-10 message control id missing")
    if not head.facility:
        raise _Reject("AE", 101, "MSH-4", "MSH-4 sending facility missing")
    common = {
        "facility": head.facility,
        "message_control_id": head.message_control_id,
        "version": version,
        "message_type": f"{code}^{event}",
        "sending_application": head.sending_application or "",
        "charset": charset,
    }
    if code == "ADT":
        return PatientUpdate(patient=_patient(segs), **common)
    return _order(segs, code, common)


def _first(segs: list[_Seg], name: str) -> _Seg | None:
    return next((s for s in segs if s.name == name), None)


def _patient(segs: list[_Seg]) -> PatientData:
    pid = _first(segs, "PID")
    if pid is None:
        raise _Reject("AE", 100, "PID", "PID segment missing")
    patient_id = national_id = ""
    for rep in range(pid.reps(3)):
        value = pid.get(3, 1, rep=rep)
        if pid.get(3, 5, rep=rep).upper() == "NNCHN":
            national_id = national_id or value
        elif value and not patient_id:
            patient_id = value
    if not patient_id:
        raise _Reject("AE", 101, "PID-3", "PID-3 patient identifier missing")
    family, given = pid.get(5, 1), pid.get(5, 2)
    if not family and not given:
        raise _Reject("AE", 101, "PID-5", "PID-5 patient name missing")
    return PatientData(
        id=patient_id,
        family=family,
        given=given,
        display=_display_name(family, given),
        sex=_SEXES.get(pid.get(8).upper(), "U"),
        birth_date=_parse_date(pid.get(7), "PID-7"),
        national_id=national_id or pid.get(19) or None,
    )


def _clinician(seg: _Seg | None, n: int) -> Clinician | None:
    if seg is None:
        return None
    ident, name = seg.get(n, 1), _display_name(seg.get(n, 2), seg.get(n, 3))
    return Clinician(id=ident or None, name=name) if ident or name else None


def _order(segs: list[_Seg], code: str, common: dict[str, Any]) -> NewOrder | CancelOrder:
    orcs = [s for s in segs if s.name == "ORC"]
    if not orcs:
        raise _Reject("AE", 100, "ORC", "ORC segment missing")
    if len(orcs) > 1:
        raise _Reject("AE", 100, "ORC", f"{len(orcs)} orders in one message; send one ORC per message")
    orc, obr = orcs[0], _first(segs, "OBR")
    ipc = _first(segs, "IPC") if code == "OMI" else None
    placer = orc.get(2) or (obr.get(2) if obr else "")
    filler = orc.get(3) or (obr.get(3) if obr else "")
    accession = (ipc.get(1) if ipc else "") or placer or filler
    control = orc.get(1).upper()
    if control == "CA":
        if not accession:
            raise _Reject("AE", 101, "ORC-2", "ORC-2 placer order number (accession) missing")
        try:
            patient: PatientData | None = _patient(segs)
        except _Reject:
            patient = None  # a cancel needs only the accession number
        return CancelOrder(accession_number=accession, patient=patient, **common)
    if control != "NW":
        raise _Reject("AE", 103, "ORC-1", f"order control {control!r} not supported (NW, CA)")
    patient = _patient(segs)
    if obr is None:
        raise _Reject("AE", 100, "OBR", "OBR segment missing")
    if not accession:
        raise _Reject("AE", 101, "ORC-2", "ORC-2 placer order number (accession) missing")
    procedure_code, procedure_text = obr.get(4, 1), obr.get(4, 2)
    if not procedure_code and not procedure_text:
        raise _Reject("AE", 101, "OBR-4", "OBR-4 universal service identifier missing")
    modality = _modality(obr, ipc)
    return NewOrder(
        patient=patient,
        accession_number=accession,
        kind="ecg" if modality == "ECG" else "imaging",
        modality=modality,
        procedure_code=procedure_code,
        procedure_text=procedure_text,
        body_part=_body_part(obr) or (None if modality == "ECG" else procedure_text or None),
        priority=_priority(_first(segs, "TQ1"), obr, orc),
        clinical_question=_clinical_question(obr),
        ordering_clinician=_clinician(orc, 12) or _clinician(obr, 16),
        consent=_consent(_first(segs, "CON"), patient),
        placer_order_number=placer or None,
        filler_order_number=filler or None,
        **common,
    )


def _modality(obr: _Seg, ipc: _Seg | None) -> str:
    radiology = False
    for location, seg, n in (("IPC-5", ipc, 5), ("OBR-24", obr, 24)):
        value = seg.get(n).upper() if seg is not None else ""
        if not value:
            continue
        modality = _MODALITY_CODES.get(value)
        if modality is None:
            raise _Reject("AE", 103, location, f"{location} {value!r} is not a known modality")
        if modality:
            return modality
        radiology = True
    m = _MODALITY_PREFIX.match(obr.get(4, 1).upper())
    if m:
        return _MODALITY_CODES[m.group(1)]
    if radiology:
        return "DX"
    raise _Reject("AE", 101, "OBR-24", "modality unknown: send OBR-24 (diagnostic service section) or IPC-5")


def _body_part(obr: _Seg) -> str | None:
    for comp, sub in ((4, 1), (4, 2), (1, 1), (1, 2)):
        value = obr.get(15, comp, sub)
        if value:
            return value
    return None


def _priority(tq1: _Seg | None, obr: _Seg, orc: _Seg) -> Priority:
    for value in (tq1.get(9) if tq1 else "", obr.get(27, 6), orc.get(7, 6)):
        if value:
            return _PRIORITIES.get(value.upper(), "routine")
    return "routine"


def _clinical_question(obr: _Seg) -> str | None:
    if obr.get(13):
        return obr.get(13)
    reasons = [obr.get(31, 2, rep=r) or obr.get(31, 1, rep=r) for r in range(obr.reps(31))]
    return "; ".join(r for r in reasons if r) or None


def _consent(con: _Seg | None, patient: PatientData) -> Consent | None:
    if con is None:
        return None
    given_at = None
    for n in (13, 12, 14):
        given_at = _parse_ts(con.get(n), f"CON-{n}")
        if given_at is not None:
            break
    status = con.get(11).upper() or None
    return Consent(
        given_by=_display_name(con.get(24, 1), con.get(24, 2)) or patient.display,
        given_at=given_at,
        relationship=con.get(25) or None,
        mode=con.get(10).upper() or None,
        status=status,
        granted=status not in ("R", "X", "B"),
    )


# ------------------------------------------------------------------------------------------- outbound


def _hl7_charset(charset: str | None) -> tuple[str, str]:
    """(python codec, MSH-18 value) for an outbound message; utf-8 unless we know better."""
    codec = charset if charset in _HL7_CHARSET else "utf-8"
    return codec, _HL7_CHARSET[codec]


def _set(seg: Any, n: int, er7: str | None) -> None:
    """Assign already-escaped ER7 text to field n (hl7apy parses it into components)."""
    if er7:
        setattr(seg, f"{seg.name.lower()}_{n}", er7)


def _new_message(structure: str, version: str, msh: dict[int, str | None]) -> Any:
    m = Message(structure, version=version, validation_level=VALIDATION_LEVEL.TOLERANT)
    for n, value in msh.items():
        _set(m.msh, n, value)
    return m


def _erl(location: str) -> str:
    """Error location as ERL: PID-3 -> PID^1^3, PID-3.1 -> PID^1^3^1^1, ORC -> ORC^1."""
    seg, _, rest = location.partition("-")
    fld, _, comp = rest.partition(".")
    parts = [seg, "1"] + ([fld] if fld else []) + (["1", comp] if fld and comp else [])
    return "^".join(parts)


def build_ack(
    *,
    ack_code: AckCode,
    control_id_in: str | None,
    facility_in: str | None,
    receiving_app: str = "TELENET",
    receiving_facility: str = "TELENET",
    version: str | None,
    error: ErrorInfo | None = None,
    text: str | None = None,
    message_control_id: str,
    now: datetime,
    application_in: str | None = None,
    trigger_event: str | None = None,
    charset: str | None = "utf-8",
) -> bytes:
    """An original-mode ACK: MSA-2 echoes the inbound MSH-10, ERR when there is an error.

    Answers in the inbound version when it is supported (else 2.5.1) and in the inbound charset
    (``charset`` is the Python codec of :attr:`PatientUpdate.charset` etc.; utf-8 when unknown).
    ERR is ERR-1 (ELD) before 2.5 and ERR-2/3/4/8 from 2.5 on.
    """
    version = version if version in SUPPORTED_VERSIONS else DEFAULT_VERSION
    modern = _version_tuple(version) >= (2, 5)
    codec, msh18 = _hl7_charset(charset)
    event = f"^{_escape(trigger_event)}" if trigger_event else ""
    msh_9 = f"ACK{event}^ACK" if event and _version_tuple(version) >= (2, 4) else f"ACK{event}"
    m = _new_message("ACK", version, {
        3: _escape(receiving_app), 4: _escape(receiving_facility), 5: _escape(application_in or ""),
        6: _escape(facility_in or ""), 7: _format_ts(now), 9: msh_9, 10: _escape(message_control_id),
        11: "P", 18: msh18,
    })  # fmt: skip
    msa = m.add_segment("MSA")
    _set(msa, 1, ack_code)
    _set(msa, 2, _escape(control_id_in or ""))
    message_text = text or (error.text if error else None)
    _set(msa, 3, _escape(message_text or ""))
    if error is not None:
        cwe = f"{error.code}^{_escape(ERROR_CODES.get(error.code, ''))}^HL70357"
        err = m.add_segment("ERR")
        if modern:
            _set(err, 2, _erl(error.location) if error.location else None)
            _set(err, 3, cwe)
            _set(err, 4, error.severity)
            _set(err, 8, _escape(error.text or message_text or ""))
        else:
            _set(msa, 6, cwe)
            eld = _erl(error.location).split("^")[:3] if error.location else ["", "", ""]
            _set(err, 1, "^".join([*eld, *[""] * (3 - len(eld)), cwe.replace("^", "&")]))
    return (str(m.to_er7()) + "\r").encode(codec, "replace")


def build_ack_for(
    message: Inbound,
    *,
    message_control_id: str,
    now: datetime,
    ack_code: AckCode | None = None,
    error: ErrorInfo | None = None,
    text: str | None = None,
    receiving_app: str = "TELENET",
    receiving_facility: str = "TELENET",
) -> bytes:
    """The ACK for a parsed message: AR/AE with its ERR for a :class:`Rejected`, else ``ack_code``
    (AA by default; pass AE and an :class:`ErrorInfo` for a service-level refusal)."""
    if isinstance(message, Rejected):
        ack_code = ack_code or message.ack_code
        error = error or message.error
        text = text or message.reason
    _, _, event = (message.message_type or "").partition("^")
    return build_ack(
        ack_code=ack_code or ("AE" if error else "AA"),
        control_id_in=message.message_control_id,
        facility_in=message.facility,
        receiving_app=receiving_app,
        receiving_facility=receiving_facility,
        version=message.version,
        error=error,
        text=text,
        message_control_id=message_control_id,
        now=now,
        application_in=message.sending_application,
        trigger_event=event or None,
        charset=message.charset,
    )


_SECTION = "99TLN"  # local coding system for report sections
_ECG_OBSERVATIONS: dict[str, tuple[str, str, str, str]] = {
    # key: (LOINC code, name, UCUM unit, coding system)
    "rate_bpm": ("8867-4", "Heart rate", "/min", "LN"),
    "pr_ms": ("8625-6", "P-R Interval", "ms", "LN"),
    "qrs_ms": ("8633-0", "QRS duration", "ms", "LN"),
    "qt_ms": ("8634-8", "Q-T Interval", "ms", "LN"),
    "qtc_ms": ("8636-3", "Q-T Interval Corrected", "ms", "LN"),
    "axis_deg": ("8632-2", "QRS axis", "deg", "LN"),
}
_DIAGNOSTIC_SECTION = {"ECG": "EC", "CT": "CT", "MR": "MR", "US": "US", "NM": "NMS"}


def _text_lines(value: str | None) -> list[str]:
    return [line.strip() for line in (value or "").splitlines() if line.strip()]


def build_oru(
    result: ReportResult,
    *,
    message_control_id: str,
    sending_facility: str = "TELENET",
    receiving_facility: str,
    now: datetime,
    version: str = DEFAULT_VERSION,
    sending_application: str = "TELENET",
    receiving_application: str | None = None,
) -> bytes:
    """ORU^R01 in UTF-8: one OBX (TX) per line of findings, impression, critical items and addendum,
    one OBX (NM) per ECG measurement. OBR-25/OBX-11 carry the status, OBX-8 ``AA`` marks critical."""
    if result.status not in ("F", "C"):
        raise ValueError(f"status must be F or C, not {result.status!r}")
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"HL7 version {version} not supported")
    unknown = set(result.ecg or {}) - set(_ECG_OBSERVATIONS) - {"rhythm"}
    if unknown:
        raise ValueError(f"unknown ECG measurements: {sorted(unknown)}")
    msh_9 = "ORU^R01^ORU_R01" if _version_tuple(version) >= (2, 4) else "ORU^R01"
    m = _new_message("ORU_R01", version, {
        3: _escape(sending_application), 4: _escape(sending_facility),
        5: _escape(receiving_application or ""), 6: _escape(receiving_facility), 7: _format_ts(now),
        9: msh_9, 10: _escape(message_control_id), 11: "P", 17: "CHN", 18: "UNICODE UTF-8",
    })  # fmt: skip
    result_group = m.add_group("ORU_R01_PATIENT_RESULT")
    pid = result_group.add_group("ORU_R01_PATIENT").add_segment("PID")
    p = result.patient
    _set(pid, 1, "1")
    _set(pid, 3, _escape(p.id))
    _set(pid, 5, f"{_escape(p.family)}^{_escape(p.given)}" if p.family or p.given else _escape(p.display))
    _set(pid, 7, p.birth_date.strftime("%Y%m%d") if p.birth_date else None)
    _set(pid, 8, p.sex)
    order = result_group.add_group("ORU_R01_ORDER_OBSERVATION")
    placer = _escape(result.placer_order_number or result.accession_number)
    accession = _escape(result.accession_number)
    orc, obr = order.add_segment("ORC"), order.add_segment("OBR")
    for n, value in ((1, "RE"), (2, placer), (3, accession), (5, "CM")):
        _set(orc, n, value)
    procedure = f"{_escape(result.procedure_code)}^{_escape(result.procedure_text)}"
    signer = f"{_escape(result.signer_id)}&{_escape(result.signer_name)}"
    observed = _format_ts(result.observed_at) if result.observed_at else None
    section = _DIAGNOSTIC_SECTION.get(result.modality or "", "RAD" if result.modality else "")
    for n, obr_value in (
        (1, "1"), (2, placer), (3, accession), (4, procedure), (7, observed),
        (22, _format_ts(result.signed_at)), (24, section), (25, result.status), (32, signer),
    ):  # fmt: skip
        _set(obr, n, obr_value)

    obx_rows: list[tuple[str, str, str, str, str | None]] = []  # type, OBX-3, value, units, flag
    critical_flag = "AA" if result.critical else None
    for code, name, text, flag in (
        ("FINDINGS", "检查所见", result.findings, None),
        ("IMPRESSION", "诊断意见", result.impression, critical_flag),
    ):
        for line in _text_lines(text):
            obx_rows.append(("TX", f"{code}^{name}^{_SECTION}", _escape(line), "", flag))
    if result.critical:
        for item in result.critical_items:
            obx_rows.append(("TX", f"CRITICAL^危急值^{_SECTION}", _escape(item), "", "AA"))
    ecg = result.ecg or {}
    if ecg.get("rhythm"):
        obx_rows.append(("TX", f"RHYTHM^心律^{_SECTION}", _escape(str(ecg["rhythm"])), "", None))
    for key, (code, name, unit, system) in _ECG_OBSERVATIONS.items():
        measured = ecg.get(key)
        if measured is not None:
            obx_rows.append(("NM", f"{code}^{name}^{system}", f"{measured:g}", f"{unit}^{unit}^UCUM", None))
    for line in _text_lines(result.addendum_text):
        obx_rows.append(("TX", f"ADDENDUM^补充报告^{_SECTION}", _escape(line), "", None))

    for i, (value_type, ident, value, units, flag) in enumerate(obx_rows, start=1):
        obx = order.add_group("ORU_R01_OBSERVATION").add_segment("OBX")
        for n, v in (
            (1, str(i)), (2, value_type), (3, ident), (5, value), (6, units), (8, flag),
            (11, result.status), (14, observed),
        ):  # fmt: skip
            _set(obx, n, v)
    return (str(m.to_er7()) + "\r").encode("utf-8")


def parse_ack(raw: bytes) -> AckInfo:
    """Read a peer's ACK (2.3.1 to 2.5.1 and other versions hl7apy knows); raises :class:`InvalidAck`."""
    try:
        text, charset = _decode(raw)
        head = _header_from_line(_lines(text)[0], charset)
        version = head.version if head.version in hl7apy.SUPPORTED_LIBRARIES else None
        if version is None:
            raise _Reject("AR", 203, "MSH-12", f"HL7 version {head.version!r} unknown")
        segs = _parse(text, version, charset)
    except _Reject as r:
        raise InvalidAck(r.reason) from None
    msa, err = _first(segs, "MSA"), _first(segs, "ERR")
    if msa is None:
        raise InvalidAck("no MSA segment")
    ack_code = msa.get(1).upper()
    if ack_code not in ("AA", "AE", "AR", "CA", "CE", "CR"):
        raise InvalidAck(f"MSA-1 {ack_code!r} is not an acknowledgment code")
    code = (err.get(3) or err.get(1, 4, 1) if err else "") or msa.get(6)
    message = msa.get(3) or (err.get(8) if err else "")
    return AckInfo(
        ack_code=ack_code,
        control_id_acked=msa.get(2),
        text=message or None,
        error_code=int(code) if code.isdigit() else None,
        message_control_id=head.message_control_id,
    )


__all__ = [
    "DEFAULT_VERSION",
    "ERROR_CODES",
    "SUPPORTED_VERSIONS",
    "AckCode",
    "AckInfo",
    "CancelOrder",
    "Clinician",
    "Consent",
    "ErrorInfo",
    "Inbound",
    "InvalidAck",
    "Kind",
    "NewOrder",
    "PatientData",
    "PatientUpdate",
    "Priority",
    "Rejected",
    "ReportResult",
    "build_ack",
    "build_ack_for",
    "build_oru",
    "parse_ack",
    "parse_inbound",
]
