"""Order control from the requesting side's HIS (IHE RAD-2/RAD-3): change an order (ORC-1 XO) while nobody
has claimed it, and discontinue one (ORC-1 DC) whose data may already have arrived.

Protocol-free: the HL7 gateway maps the message to these calls; the request keeps the HIS's placer and
filler order numbers (ORC-2/ORC-3) so that later messages and status updates name the same order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import update

from telenet.domain.access import Actor
from telenet.domain.errors import Conflict, Invalid
from telenet.domain.lifecycle import Action, Priority, RequestState
from telenet.domain.sla import due_at, sla_minutes_for
from telenet.services.access import load_for_action, require_requesting_side
from telenet.services.hub import Hub, use_case
from telenet.services.transitions import apply, apply_fields
from telenet.store.models import Request

#: What a claimed request does with a DC: "return" it to the requester (the reader's work ends with the
#: HIS's reason) or "refuse" the DC (AE) and let the read finish.
DiscontinuePolicy = Literal["return", "refuse"]
CHANGEABLE = ("priority", "clinical_question", "scheduled_at", "body_part")
_OPEN = (RequestState.ORDERED.value, RequestState.QUEUED.value)


async def record_order_numbers(
    session: Any, request_id: int, placer: str | None, filler: str | None, study_instance_uid: str | None = None
) -> None:
    """Keep the HIS's ORC-2/ORC-3 (and the Study Instance UID an OMI's IPC-3 fixed) on the request, in the
    caller's transaction."""
    values: dict[str, Any] = {
        "placer_order_number": placer[:64] if placer else None,
        "filler_order_number": filler[:64] if filler else None,
    }
    if study_instance_uid:
        values["study_instance_uid"] = study_instance_uid
    await session.execute(
        update(Request).where(Request.id == request_id).values(**values).execution_options(synchronize_session=False)
    )


async def change(hub: Hub, actor: Actor, request_id: int, changes: dict[str, Any], source: str) -> dict[str, Any]:
    """ORC-1 XO: new priority, clinical question, scheduled time or body part, until the request is claimed
    (afterwards a reader is working on what was asked: 409 with the reason). A new priority of a queued
    request moves its due time to the new priority's SLA from when it was queued."""
    values = {k: v for k, v in changes.items() if k in CHANGEABLE and v is not None}
    if not values:
        raise Invalid("the change names nothing that may change", code="nothing-to-change")
    async with use_case(hub, actor, "request.change", "request", str(request_id)) as uow:
        request, center, inst_code = await load_for_action(uow, actor, request_id, integration_subtree=True)
        require_requesting_side(actor, request, action="change an order")
        if request.state not in _OPEN:
            who = "claimed by a reader" if request.state == RequestState.CLAIMED.value else request.state
            raise Conflict(
                f"request {request.accession_number} is {who}: the order can no longer be changed",
                code="change-after-claim",
                details={"state": request.state},
            )
        fields: dict[str, Any] = {}
        if "priority" in values:
            priority = Priority(values["priority"])
            fields |= {"priority": priority.value, "priority_rank": priority.rank}
            if request.queued_at is not None:
                minutes = sla_minutes_for(request.kind, center.sla_minutes)
                fields["due_at"] = due_at(request.queued_at, minutes, priority)
        for key in ("clinical_question", "body_part", "scheduled_at"):
            if key in values:
                fields[key] = values[key]
        before = {key: _plain(getattr(request, key)) for key in values}
        await apply_fields(
            hub,
            uow.session,
            request,
            center.code,
            inst_code,
            "request.changed",
            {"changed": sorted(values), "source": source},
            **fields,
        )
        uow.audit(detail={"source": source, "before": before, "after": {k: _plain(v) for k, v in values.items()}})
        return {"id": request.id, "state": request.state, "changed": sorted(values)}


async def discontinue(
    hub: Hub, actor: Actor, request_id: int, reason: str | None, source: str, policy: DiscontinuePolicy = "return"
) -> dict[str, Any]:
    """ORC-1 DC: an order not yet claimed is cancelled (its data may be there: it stays, and nothing is
    charged); a claimed one is returned to the requester with the HIS's reason, or the DC is refused, as
    ``policy`` says; a final one cannot be discontinued (409)."""
    note = f"discontinued by the HIS ({source})" + (f": {reason}" if reason else "")
    async with use_case(hub, actor, "request.discontinue", "request", str(request_id)) as uow:
        request, center, inst_code = await load_for_action(uow, actor, request_id, integration_subtree=True)
        require_requesting_side(actor, request, action="discontinue an order")
        now = hub.clock.now()
        common: dict[str, Any] = {"center_code": center.code, "institution_code": inst_code}
        data = {"reason": note, "order_control": "DC"}
        if request.state == RequestState.CLAIMED.value:
            if policy != "return":
                raise Conflict(
                    f"request {request.accession_number} is claimed by a reader; this hub refuses DC once claimed",
                    code="discontinue-after-claim",
                    details={"state": request.state},
                )
            await apply(
                hub, uow.session, request, Action.RETURN, event="request.returned", data=data,
                return_reason="other", return_note=note, returned_at=now, claimed_by_id=None,
                claim_expires_at=None, **common,
            )  # fmt: skip
        else:
            await apply(
                hub, uow.session, request, Action.CANCEL, event="request.cancelled", data=data,
                cancelled_at=now, claimed_by_id=None, claim_expires_at=None, **common,
            )  # fmt: skip
        uow.audit(detail={"source": source, "reason": reason, "state": request.state})
        return {"id": request.id, "state": request.state}


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
