"""The ACK is written as plain ER7 (an hl7apy message cost milliseconds per ACK, and the HL7 fuzzing answers
ten thousand of them): byte for byte what the hl7apy builder wrote, for every code, version, charset and
error shape, with hostile text in every echoed field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateways.hl7.ack import _erl, build_ack
from gateways.hl7.er7 import (
    DEFAULT_VERSION,
    ERROR_CODES,
    SUPPORTED_VERSIONS,
    escape,
    format_ts,
    outbound_charset,
    version_tuple,
)
from gateways.hl7.messages import ErrorInfo


def _set(seg: object, n: int, er7: str | None) -> None:
    if er7:
        setattr(seg, f"{seg.name.lower()}_{n}", er7)  # type: ignore[attr-defined]


def hl7apy_ack(**kw: object) -> bytes:
    """The builder as it was (hl7apy message, to_er7), kept here as the oracle."""
    version = kw["version"] if kw["version"] in SUPPORTED_VERSIONS else DEFAULT_VERSION
    assert isinstance(version, str)
    error = kw.get("error")
    assert error is None or isinstance(error, ErrorInfo)
    modern = version_tuple(version) >= (2, 5)
    codec, msh18 = outbound_charset(kw.get("charset", "utf-8"))  # type: ignore[arg-type]
    trigger_event = kw.get("trigger_event")
    event = f"^{escape(trigger_event)}" if isinstance(trigger_event, str) and trigger_event else ""
    msh_9 = f"ACK{event}^ACK" if event and version_tuple(version) >= (2, 4) else f"ACK{event}"
    message_type = kw.get("message_type")
    if isinstance(message_type, str):
        code, trigger, structure = [*message_type.split("^"), "", ""][:3]
        msh_9 = f"{code}^{trigger}^{structure}" if version_tuple(version) >= (2, 4) else f"{code}^{trigger}"
    m = Message("ACK", version=version, validation_level=VALIDATION_LEVEL.TOLERANT)
    values = {
        3: "TELENET", 4: "TELENET", 5: escape(str(kw.get("application_in") or "")),
        6: escape(str(kw.get("facility_in") or "")), 7: format_ts(kw["now"]), 9: msh_9,  # type: ignore[arg-type]
        10: escape(str(kw["message_control_id"])), 11: "P", 18: msh18,
    }  # fmt: skip
    for n, value in values.items():
        _set(m.msh, n, value)
    msa = m.add_segment("MSA")
    _set(msa, 1, str(kw["ack_code"]))
    _set(msa, 2, escape(str(kw.get("control_id_in") or "")))
    text = kw.get("text")
    message_text = text or (error.text if error else None)
    _set(msa, 3, escape(str(message_text or "")))
    if error is not None:
        cwe = f"{error.code}^{escape(ERROR_CODES.get(error.code, ''))}^HL70357"
        err = m.add_segment("ERR")
        if modern:
            _set(err, 2, _erl(error.location) if error.location else None)
            _set(err, 3, cwe)
            _set(err, 4, error.severity)
            _set(err, 8, escape(error.text or str(message_text or "")))
        else:
            _set(msa, 6, cwe)
            eld = _erl(error.location).split("^")[:3] if error.location else ["", "", ""]
            _set(err, 1, "^".join([*eld, *[""] * (3 - len(eld)), cwe.replace("^", "&")]))
    extra = kw.get("extra_segments") or ()
    lines = [str(m.to_er7()), *extra]  # type: ignore[misc]
    return ("\r".join(lines) + "\r").encode(codec, "replace")


hostile = st.text(alphabet=st.sampled_from("AZ09 |^~\\&张三\r\n\t-.#"), max_size=12)
locations = st.sampled_from([None, "PID-3", "PID-3.1", "ORC", "OBR[2]-24", "MSH-4", "MSH-12", "PV1-19.1"])
errors = st.none() | st.builds(
    ErrorInfo,
    code=st.sampled_from([*ERROR_CODES, 999]),
    location=locations,
    text=st.none() | hostile,
    severity=st.sampled_from(["E", "W", "I"]),
)
zones = st.sampled_from([UTC, timezone(timedelta(hours=8)), None])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ack_code=st.sampled_from(["AA", "AE", "AR"]),
    control_id_in=st.none() | hostile,
    facility_in=st.none() | hostile,
    application_in=st.none() | hostile,
    version=st.sampled_from([*SUPPORTED_VERSIONS, "2.6", "", None]),
    error=errors,
    text=st.none() | hostile,
    trigger_event=st.sampled_from([None, "", "O01", "A08", "O^1"]),
    charset=st.sampled_from(["utf-8", "gb18030", "gbk", "latin-1", "ascii", None, "ebcdic"]),
    message_type=st.sampled_from([None, "ORR^O02^ORR_O02", "ORI^O24^ORI_O24", "ORG^O20"]),
    extra=st.sampled_from([(), ("ORC|OK|P1|A1",), ("ORC|UA|P1|A1", "ORC|UA|P2|A2")]),
    zone=zones,
)
def test_plain_er7_ack_is_byte_for_byte_the_hl7apy_ack(
    ack_code: str,
    control_id_in: str | None,
    facility_in: str | None,
    application_in: str | None,
    version: str | None,
    error: ErrorInfo | None,
    text: str | None,
    trigger_event: str | None,
    charset: str | None,
    message_type: str | None,
    extra: tuple[str, ...],
    zone: timezone | None,
) -> None:
    now = datetime(2026, 3, 2, 10, 0, 5, tzinfo=zone)
    kw = {
        "ack_code": ack_code, "control_id_in": control_id_in, "facility_in": facility_in,
        "application_in": application_in, "version": version, "error": error, "text": text,
        "trigger_event": trigger_event, "charset": charset, "message_type": message_type,
        "message_control_id": "TNA0123456789abcdef", "now": now,
    }  # fmt: skip
    ours = build_ack(**kw, extra_segments=extra)  # type: ignore[arg-type]
    assert ours == hl7apy_ack(**kw, extra_segments=extra)
    assert ours.endswith(b"\r") and ours.startswith(b"MSH|^~\\&|TELENET|TELENET|")


@pytest.mark.parametrize("field", ["application_in", "facility_in"])
@pytest.mark.parametrize("blank", [" ", "  ", "\t"])
def test_an_echoed_msh_field_of_only_blanks_is_left_out_as_hl7apy_leaves_it_out(field: str, blank: str) -> None:
    """Found by the differential test: a sending application of one space was echoed as ``| |`` in MSH-5."""
    kw = {
        "ack_code": "AA", "control_id_in": "C1", "facility_in": None, "application_in": None, "version": "2.3.1",
        "error": None, "text": None, "trigger_event": None, "charset": "utf-8", "message_type": None,
        "message_control_id": "TNA1", "now": datetime(2026, 3, 2, 10, 0, 5, tzinfo=UTC), field: blank,
    }  # fmt: skip
    ours = build_ack(**kw)  # type: ignore[arg-type]
    assert ours.startswith(b"MSH|^~\\&|TELENET|TELENET|||20260302100005")
    assert ours == hl7apy_ack(**kw, extra_segments=())
