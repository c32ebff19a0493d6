"""Reading request bodies safely: JSON only as ``application/json``, bounded in size and nesting, ids
bounded to 64 bits, so that no body or path produces a 500."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from telenet.domain.errors import Invalid, NotFound, PayloadTooLarge, UnsupportedMediaType

MAX_JSON_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 32
MAX_ID = 2**63 - 1


def json_depth_exceeds(text: str, limit: int) -> bool:
    """Whether arrays/objects nest deeper than ``limit`` (one linear pass, strings skipped), checked before
    parsing so that the parser's recursion is never reached."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


async def read_json_body(request: web.Request) -> Any:
    """The parsed JSON body: 415 for another media type, 413 past MAX_JSON_BYTES, 422 for bad or too deep JSON."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType(
            f"the body must be application/json, not {request.content_type or 'missing'}", code="bad-content-type"
        )
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise PayloadTooLarge(f"a JSON body has at most {MAX_JSON_BYTES} bytes")
    raw = await request.read()
    if len(raw) > MAX_JSON_BYTES:
        raise PayloadTooLarge(f"a JSON body has at most {MAX_JSON_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid("the body is not valid UTF-8", code="bad-json") from None
    if json_depth_exceeds(text, MAX_JSON_DEPTH):
        raise Invalid(f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels", code="json-too-deep")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise Invalid(f"the body is not valid JSON: {exc}", code="bad-json") from None


def path_id(request: web.Request, name: str = "id", what: str = "id") -> int:
    """A numeric path id: 422 when not a number; 404 outside 1..2**63-1 (no such row can exist)."""
    raw = request.match_info[name]
    if not raw.isascii() or not raw.isdigit() or len(raw) > 30:
        raise Invalid(f"the {what} must be a number", code="bad-parameter")
    value = int(raw)
    if not 1 <= value <= MAX_ID:
        raise NotFound(f"no {what} {raw}")
    return value
