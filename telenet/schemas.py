"""The JSON Schemas under ``schemas/`` (REST payloads, events, the network file), loaded once each."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from telenet.domain.errors import Invalid

SCHEMAS_DIR = Path(__file__).resolve().parent.parent / "schemas"


@cache
def load_schema(name: str) -> dict[str, Any]:
    """``name`` is a path under ``schemas/`` without the ``.schema.json`` suffix, e.g. ``api/token``."""
    path = SCHEMAS_DIR / f"{name}.schema.json"
    with path.open(encoding="utf-8") as fh:
        schema: dict[str, Any] = json.load(fh)
    return schema


@cache
def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load_schema(name), format_checker=FormatChecker())


def schema_errors(name: str, instance: Any) -> list[dict[str, str]]:
    """Every schema violation as ``{"location": JSON pointer, "message": ...}``, in document order."""
    found = []
    for error in sorted(validator(name).iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))):
        pointer = "".join(f"/{part}" for part in error.absolute_path) or "/"
        found.append({"location": pointer, "message": error.message})
    return found


def validate(name: str, instance: Any) -> None:
    """Raise :class:`Invalid` listing every violation when ``instance`` does not match the schema."""
    errors = schema_errors(name, instance)
    if errors:
        raise Invalid(
            f"the document does not match {name}: {len(errors)} error(s)",
            code="schema-violation",
            details=errors,
        )
