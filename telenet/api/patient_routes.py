"""Patient merges (ADT^A40) over REST, for admins: see them, and undo one."""

from __future__ import annotations

from aiohttp import web

from telenet.api.bodies import path_id
from telenet.api.context import actor_of, hub_of, json_response
from telenet.api.registry_routes import query_int
from telenet.api.spec import Routes, integer
from telenet.services import patient_merge

routes = Routes()


@routes.add(
    "GET",
    "/api/v1/patients/merges",
    summary="Patient merges (HL7 ADT^A40) of the admin's subtree, newest first, with every row each one moved",
    tag="patients",
    roles="admin (their subtree)",
    query=(("limit", "page size (max 1000)", integer(1, 1000)),),
)
async def list_merges(request: web.Request) -> web.Response:
    result = await patient_merge.list_merges(
        hub_of(request), actor_of(request), limit=query_int(request, "limit", 100, low=1)
    )
    return json_response(result)


@routes.add(
    "POST",
    "/api/v1/patients/merges/{id}/revert",
    summary="Undo a patient merge: exactly the rows it moved go back to the merged id (audited)",
    tag="patients",
    roles="admin (their subtree)",
)
async def revert_merge(request: web.Request) -> web.Response:
    merge_id = path_id(request, what="merge id")
    return json_response(await patient_merge.revert(hub_of(request), actor_of(request), merge_id))
