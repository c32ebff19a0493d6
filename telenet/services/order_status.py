"""Order status back to the requesting HIS (IHE RAD-3 in the Order Filler's direction): when a request that
came in by HL7 is scheduled (queued), in progress (claimed), completed (final), cancelled or returned, an
order status row joins the HL7 outbox in the transaction of the change, so it is delivered in order with the
ORU per (destination, patient).

Wired as an event listener (``Hub.event_listeners``, set up in ``telenet.app``): no use case calls this
module. Only institutions whose registry entry asks for status messages (``hl7_order_status``) get them;
others keep receiving only the ORU. The row holds the facts as JSON; the gateway turns them into HL7.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telenet.services import outbox
from telenet.services.events import PendingEvent
from telenet.services.hub import Hub
from telenet.store.models import HL7InboundMessage, HL7OutboxItem, Institution, Patient, Request

log = logging.getLogger(__name__)

#: Event -> the request's order status (HL7 table 0038 wording, mapped to ORC-5 by the gateway).
STATUS_OF_EVENT = {
    "request.queued": "scheduled",
    "request.resubmitted": "scheduled",
    "request.claimed": "in_progress",
    "request.final": "completed",
    "request.cancelled": "cancelled",
    "request.returned": "returned",
}


async def on_event(session: AsyncSession, hub: Hub, event: PendingEvent) -> None:
    """Queue the status message an event calls for, if any (in the event's transaction)."""
    status = STATUS_OF_EVENT.get(event.name)
    if status is None or event.request_id is None:
        return
    request = await session.get(Request, event.request_id)
    if request is None or request.placer_order_number is None:
        return  # not an HL7 order: the HIS does not know it
    inst = await session.get(Institution, request.requesting_institution_id)
    if inst is None or not inst.hl7_order_status or not inst.hl7_host or not inst.hl7_port:
        return
    if status == "cancelled" and (event.data or {}).get("order_control") == "DC":
        status = "discontinued"
    payload = await _payload(session, request, status, event)
    item = HL7OutboxItem(
        request_id=request.id,
        report_id=None,
        message_kind="status",
        institution_id=inst.id,
        institution_path=inst.path,
        destination_host=inst.hl7_host,
        destination_port=inst.hl7_port,
        receiving_facility=inst.hl7_facility or inst.code,
        patient_key=str(request.patient_id),
        message_control_id="",
        status="pending",
        result_status="S",
        payload=payload,
        attempts=0,
        created_at=hub.clock.now(),
    )
    session.add(item)
    await session.flush()
    item.message_control_id = outbox.control_id(item.id)
    outbox.mark_enqueued()


async def _payload(session: AsyncSession, request: Request, status: str, event: PendingEvent) -> dict[str, Any]:
    patient = await session.get(Patient, request.patient_id)
    assert patient is not None
    info = (
        await session.execute(
            select(HL7InboundMessage.order_info)
            .where(HL7InboundMessage.request_id == request.id, HL7InboundMessage.order_info.is_not(None))
            .order_by(HL7InboundMessage.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none() or {}
    names = info.get("patient_name") or {}
    same_name = names.get("display") == patient.name
    data = event.data or {}
    return {
        "message": "status",
        "request_id": request.id,
        "accession_number": request.accession_number,
        "placer_order_number": request.placer_order_number,
        "filler_order_number": request.filler_order_number or request.accession_number,
        "order_status": status,
        "state": request.state,
        "version": info.get("version"),
        "order_message_type": info.get("message_type"),
        "procedure": info.get("procedure") or {"code": request.modality or "", "text": request.body_part or ""},
        "patient": {
            "id": patient.his_id,
            "name": patient.name,
            "family": names.get("family", "") if same_name else patient.name,
            "given": names.get("given", "") if same_name else "",
            "sex": patient.sex,
            "birth_date": patient.birth_date.isoformat() if patient.birth_date else None,
        },
        "at": event.at.isoformat(),
        "reason": data.get("reason") or data.get("note"),
    }
