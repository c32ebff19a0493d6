"""The HL7 gateway's queues over REST, for admins: the results outbox and the dead letters (with replay)."""

from __future__ import annotations

from aiohttp import web

from telenet.api.bodies import path_id
from telenet.api.context import actor_of, hub_of
from telenet.api.registry_routes import query_int
from telenet.api.spec import PAGE_ID, Routes, integer, one_of
from telenet.domain.errors import Invalid
from telenet.services import hl7_inbound, outbox
from telenet.services.hl7_inbound import InboundReplayer

routes = Routes()

#: The running gateway's inbound path, set by the composition root when the HL7 gateway runs here.
REPLAYER = web.AppKey("hl7_replayer", InboundReplayer)


@routes.add(
    "GET",
    "/api/v1/hl7/outbox",
    summary="ORU^R01 results waiting for (or done with) delivery to the HIS, and each destination's state",
    tag="hl7",
    roles="admin (their subtree)",
    query=(
        ("status", "pending (default: the backlog) | delivered | dead | all", one_of(*outbox.STATUSES, "all")),
        ("limit", "page size (max 1000)", integer(1, 1000)),
        ("after_id", "continue after this outbox id", PAGE_ID),
    ),
)
async def list_outbox(request: web.Request) -> web.Response:
    after = request.query.get("after_id")
    result = await outbox.backlog(
        hub_of(request),
        actor_of(request),
        status=request.query.get("status", "pending"),
        limit=query_int(request, "limit", 100, low=1),
        after_id=query_int(request, "after_id", 0, high=2**62) if after is not None else None,
    )
    return web.json_response(result)


@routes.add(
    "GET",
    "/api/v1/hl7/dead-letters",
    summary="HL7 messages that could not be processed: unparseable input, ORUs the HIS refused",
    tag="hl7",
    roles="admin (their subtree)",
    query=(
        ("direction", "inbound | outbound", one_of("inbound", "outbound")),
        ("unresolved", "true: only those not yet resolved by a replay", {"type": "boolean"}),
        ("limit", "page size (max 1000)", integer(1, 1000)),
        ("before_id", "continue below this id", PAGE_ID),
    ),
)
async def list_dead_letters(request: web.Request) -> web.Response:
    before = request.query.get("before_id")
    unresolved = request.query.get("unresolved", "false").lower()
    if unresolved not in ("true", "false"):
        raise Invalid("query parameter unresolved is true or false", code="bad-parameter")
    result = await hl7_inbound.list_dead_letters(
        hub_of(request),
        actor_of(request),
        direction=request.query.get("direction"),
        unresolved=unresolved == "true",
        limit=query_int(request, "limit", 50, low=1),
        before_id=query_int(request, "before_id", 0, high=2**62) if before is not None else None,
    )
    return web.json_response(result)


@routes.add(
    "POST",
    "/api/v1/hl7/dead-letters/{id}/replay",
    summary="Run a dead letter again (inbound: the whole inbound path; outbound: back into the outbox)",
    tag="hl7",
    roles="admin (their subtree)",
    responses={
        "200": "the dead letter with the replay's outcome",
        "404": "no such dead letter in your subtree",
        "409": "already queued, or the HL7 gateway does not run in this process",
    },
)
async def replay_dead_letter(request: web.Request) -> web.Response:
    letter_id = path_id(request, what="dead letter id")
    replayer = request.app.get(REPLAYER)
    view = await hl7_inbound.replay_dead_letter(hub_of(request), actor_of(request), letter_id, replayer)
    return web.json_response(view)
