"""ORM^O01 (OMG^O19 for orders placed as OMG) with ORC-1 SC: the order status the hub (as Order Filler)
tells the requesting HIS, in the HL7 version the order came in (2.3.1 to 2.5.1), from an order status row
of the outbox.

ORC-5 takes table 0038 (the same codes in 2.3.1 and 2.5.1): SC scheduled, IP in process, CM completed,
CA cancelled, DC discontinued, HD on hold (a request returned to the requester for better data).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from gateways.hl7.er7 import DEFAULT_VERSION, SUPPORTED_VERSIONS, escape, format_ts, version_tuple
from gateways.hl7.mapping import HIS_TIMEZONE

#: The service's order status -> ORC-5 (HL7 table 0038).
ORDER_STATUS = {
    "scheduled": "SC",
    "in_progress": "IP",
    "completed": "CM",
    "cancelled": "CA",
    "discontinued": "DC",
    "returned": "HD",
}


def build_order_status(
    payload: dict[str, Any], *, message_control_id: str, receiving_facility: str, now: datetime
) -> bytes:
    """The ORM^O01 (ORC-1 SC) of an order status row: PID, ORC (placer, filler, ORC-5, ORC-9, ORC-16 the
    reason of a cancel/return) and OBR (placer, filler, procedure)."""
    version = payload.get("version") if payload.get("version") in SUPPORTED_VERSIONS else DEFAULT_VERSION
    assert isinstance(version, str)
    # An order placed as OMG^O19 (IHE SWF.b HL7 v2.5.1 Option) hears back in OMG^O19, others in ORM^O01.
    omg = str(payload.get("order_message_type") or "").startswith("OMG") and version_tuple(version) >= (2, 5)
    msh_9 = "OMG^O19^OMG_O19" if omg else "ORM^O01^ORM_O01" if version_tuple(version) >= (2, 4) else "ORM^O01"
    patient = payload["patient"]
    family, given = patient.get("family") or "", patient.get("given") or ""
    name = f"{escape(family)}^{escape(given)}".rstrip("^") if family or given else escape(patient["name"])
    birth = patient.get("birth_date")
    placer = escape(payload.get("placer_order_number") or payload["accession_number"])
    filler = escape(payload.get("filler_order_number") or payload["accession_number"])
    at = datetime.fromisoformat(payload["at"]).astimezone(HIS_TIMEZONE)
    procedure = payload.get("procedure") or {}
    reason = payload.get("reason") or ""
    status = ORDER_STATUS[payload["order_status"]]
    segments = [
        "|".join(["MSH", "^~\\&", "TELENET", "TELENET", "", escape(receiving_facility), format_ts(now), "", msh_9,
                  escape(message_control_id), "P", version, "", "", "", "", "CHN", "UNICODE UTF-8"]),
        "|".join(["PID", "1", "", escape(patient["id"]), "", name, "",
                  date.fromisoformat(birth).strftime("%Y%m%d") if birth else "", patient.get("sex") or ""]),
        "|".join(["ORC", "SC", placer, filler, "", status, "", "", "", format_ts(at), *[""] * 6,
                  f"^{escape(reason)}" if reason else ""]).rstrip("|"),
        "|".join(["OBR", "1", placer, filler,
                  f"{escape(procedure.get('code') or '')}^{escape(procedure.get('text') or '')}".rstrip("^")]),
    ]  # fmt: skip
    return ("\r".join(segments) + "\r").encode("utf-8")
