"""The checks of a network document before anything is loaded: its JSON schema (with references inlined, for
speed at province scale) and the peer networks, which the schema cannot check."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from telenet.schemas import load_schema

NETWORK_SCHEMA = "network"


def _inline_refs(node: Any, defs: Mapping[str, Any]) -> Any:
    """``node`` with every local ``#/$defs/...`` reference replaced by its target (the schema is not recursive)."""
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = _inline_refs(defs[node["$ref"].removeprefix("#/$defs/")], defs)
        siblings = {k: _inline_refs(v, defs) for k, v in node.items() if k not in ("$ref", "description")}
        return {"allOf": [target], **siblings} if siblings else target
    return {k: _inline_refs(v, defs) for k, v in node.items() if k != "$defs"}


@cache
def _network_validator() -> Draft202012Validator:
    """The network schema with its references inlined: the same errors as ``telenet.schemas.validator``, but
    a province-scale file (11,111 institutions, 33,000 agreements) validates ~40 % faster, because resolving
    ``$ref`` (``referencing``) is a large part of jsonschema's time per node."""
    schema = load_schema(NETWORK_SCHEMA)
    return Draft202012Validator(_inline_refs(schema, schema.get("$defs", {})), format_checker=FormatChecker())


def network_schema_errors(doc: Any) -> list[dict[str, str]]:
    """Every schema violation of a network document, as ``telenet.schemas.schema_errors("network", doc)``."""
    found = []
    for error in sorted(_network_validator().iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        pointer = "".join(f"/{part}" for part in error.absolute_path) or "/"
        found.append({"location": pointer, "message": error.message})
    return found


def peer_network_errors(doc: Any) -> list[dict[str, str]]:
    """Every ``peers.networks`` entry must be an IP network (10.1.2.0/24, 2001:db8::/32, or one address)."""
    found = []
    for i, item in enumerate(doc.get("institutions", [])):
        for j, text in enumerate((item.get("peers") or {}).get("networks") or []):
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                found.append(
                    {"location": f"/institutions/{i}/peers/networks/{j}", "message": f"{text!r} is not an IP network"}
                )
    return found
