"""Acknowledgments: the original-mode ACK we answer with, and reading the ACK a peer answers our ORU with."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import hl7apy

from gateways.hl7.er7 import (
    DEFAULT_VERSION,
    ERROR_CODES,
    SUPPORTED_VERSIONS,
    Reject,
    decode,
    escape,
    first,
    format_ts,
    header_from_line,
    outbound_charset,
    parse_segments,
    split_lines,
    version_tuple,
)
from gateways.hl7.messages import (
    AckCode,
    AckInfo,
    CancelOrder,
    ChangeOrder,
    DiscontinueOrder,
    ErrorInfo,
    Inbound,
    InvalidAck,
    NewOrder,
    OrderGroups,
    Rejected,
)


def _erl(location: str) -> str:
    """Error location as ERL: PID-3 -> PID^1^3, PID-3.1 -> PID^1^3^1^1, ORC -> ORC^1, OBR[2]-24 -> OBR^2^24
    (the OBR of the second order group)."""
    seg, _, rest = location.partition("-")
    fld, _, comp = rest.partition(".")
    seg, _, sequence = seg.partition("[")
    parts = [seg, sequence.rstrip("]") or "1"] + ([fld] if fld else []) + (["1", comp] if fld and comp else [])
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
    message_type: str | None = None,
    extra_segments: tuple[str, ...] = (),
) -> bytes:
    """An original-mode ACK: MSA-2 echoes the inbound MSH-10, ERR when there is an error.

    Answers in the inbound version when it is supported (else 2.5.1) and in the inbound charset
    (``charset`` is the Python codec of :attr:`PatientUpdate.charset` etc.; utf-8 when unknown).
    ERR is ERR-1 (ELD) before 2.5 and ERR-2/3/4/8 from 2.5 on.
    """
    version = version if version in SUPPORTED_VERSIONS else DEFAULT_VERSION
    modern = version_tuple(version) >= (2, 5)
    codec, msh18 = outbound_charset(charset)
    event = f"^{escape(trigger_event)}" if trigger_event else ""
    msh_9 = f"ACK{event}^ACK" if event and version_tuple(version) >= (2, 4) else f"ACK{event}"
    if message_type is not None:
        code, trigger, structure = [*message_type.split("^"), "", ""][:3]
        msh_9 = f"{code}^{trigger}^{structure}" if version_tuple(version) >= (2, 4) else f"{code}^{trigger}"
    # Plain ER7 (every value is escaped already): an hl7apy message took milliseconds per ACK, and every
    # message we are sent is answered with one.
    msh = _segment("MSH", {
        3: escape(receiving_app), 4: escape(receiving_facility), 5: escape(application_in or ""),
        6: escape(facility_in or ""), 7: format_ts(now), 9: msh_9, 10: escape(message_control_id),
        11: "P", 12: version, 18: msh18,
    })  # fmt: skip
    message_text = text or (error.text if error else None)
    msa: dict[int, str | None] = {1: ack_code, 2: escape(control_id_in or ""), 3: escape(message_text or "")}
    lines = [msh]
    err: dict[int, str | None] | None = None
    if error is not None:
        cwe = f"{error.code}^{escape(ERROR_CODES.get(error.code, ''))}^HL70357"
        if modern:
            err = {2: _erl(error.location) if error.location else None, 3: cwe, 4: error.severity}
            err[8] = escape(error.text or message_text or "")
        else:
            msa[6] = cwe
            eld = _erl(error.location).split("^")[:3] if error.location else ["", "", ""]
            err = {1: "^".join([*eld, *[""] * (3 - len(eld)), cwe.replace("^", "&")])}
    lines.append(_segment("MSA", msa))
    if err is not None:
        lines.append(_segment("ERR", err))
    lines += extra_segments
    return ("\r".join(lines) + "\r").encode(codec, "replace")


def _segment(name: str, fields: dict[int, str | None]) -> str:
    """One segment in ER7 from its (escaped) fields by number, trailing empty fields and components left out
    (as hl7apy wrote them). MSH counts the field separator as MSH-1 and the encoding characters as MSH-2."""
    values = {n: value.rstrip("^") for n, value in fields.items() if value and value.rstrip("^")}
    if name == "MSH":  # hl7apy leaves out an MSH field of only blanks (an echoed MSH-3/4 of spaces)
        values = {n: value for n, value in values.items() if value.strip()}
    last = max(values, default=0)
    if name == "MSH":
        return "|".join(["MSH", "^~\\&", *(values.get(n, "") for n in range(3, last + 1))])
    return "|".join([name, *(values.get(n, "") for n in range(1, last + 1))])


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


def parse_ack(raw: bytes) -> AckInfo:
    """Read a peer's ACK (2.3.1 to 2.5.1 and other versions hl7apy knows); raises :class:`InvalidAck`."""
    try:
        text, charset = decode(raw)
        head = header_from_line(split_lines(text)[0], charset)
        version = head.version if head.version in hl7apy.SUPPORTED_LIBRARIES else None
        if version is None:
            raise Reject("AR", 203, "MSH-12", f"HL7 version {head.version!r} unknown")
        segs = parse_segments(text, version, charset)
    except Reject as r:
        raise InvalidAck(r.reason) from None
    msa, err = first(segs, "MSA"), first(segs, "ERR")
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


#: ORC-1 of an order response: (accepted, refused) per order control code of the request (table 0119).
_RESPONSE_CONTROL = {"NW": ("OK", "UA"), "CA": ("CR", "UC"), "XO": ("XR", "UX"), "DC": ("DR", "UD")}
_RESPONSE_TYPE = {"ORM": "ORR^O02^ORR_O02", "OMI": "ORI^O24^ORI_O24", "OMG": "ORG^O20^ORG_O20"}


def build_order_response(
    message: Inbound, *, message_control_id: str, now: datetime, error: ErrorInfo | None = None,
    text: str | None = None,
) -> bytes | None:  # fmt: skip
    """The application acknowledgement some HIS expect for orders: ORR^O02 (to ORM^O01), ORI^O24 (to
    OMI^O23) or ORG^O20 (to OMG^O19), with one ORC per order group saying what became of it (OK/UA,
    CR/UC, XR/UX, DR/UD) and the placer and filler numbers. None for messages that are not orders."""
    orders: tuple[Any, ...]
    if isinstance(message, OrderGroups):
        orders = message.orders
    elif isinstance(message, NewOrder | CancelOrder | ChangeOrder | DiscontinueOrder):
        orders = (message,)
    else:
        return None
    code = (message.message_type or "").partition("^")[0]
    response_type = _RESPONSE_TYPE.get(code)
    if response_type is None:
        return None
    lines = []
    for n, order in enumerate(orders, start=1):
        control = _control_of(order)
        ok, refused = _RESPONSE_CONTROL[control]
        placer = order.placer_order_number if isinstance(order, NewOrder) else order.accession_number
        lines.append(f"ORC|{refused if error else ok}|{escape(placer or '')}|{escape(order.accession_number)}")
        del n
    return build_ack(
        ack_code="AE" if error else "AA",
        control_id_in=message.message_control_id,
        facility_in=message.facility,
        version=message.version,
        error=error,
        text=text,
        message_control_id=message_control_id,
        now=now,
        application_in=message.sending_application,
        charset=message.charset,
        message_type=response_type,
        extra_segments=tuple(lines),
    )


def _control_of(order: Any) -> str:
    if isinstance(order, CancelOrder):
        return "CA"
    if isinstance(order, ChangeOrder):
        return "XO"
    if isinstance(order, DiscontinueOrder):
        return "DC"
    return "NW"
