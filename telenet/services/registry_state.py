"""The versioned state of registry records (institution, center, agreement, account) as JSON, and writing it
back into a row: what a revision in ``registry_revisions`` holds."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

# The versioned columns of each kind (an account's centers are its user_centers rows).
FIELDS: Mapping[str, tuple[str, ...]] = {
    "institution": (
        "name", "kind", "grade", "qc_failed", "dicom_charset", "hl7_charset", "hl7_facility", "hl7_host",
        "hl7_port", "hl7_order_status", "hl7_ack_mode",
    ),
    "center": (
        "name", "modalities", "subspecialties", "opening_hours", "sla_minutes", "capacity", "dicom_ae_title",
        "dicom_host", "dicom_port", "qc_failed", "note",
    ),
    "agreement": ("valid_from", "valid_to", "services", "invited_share_bp"),
    "account": ("role", "display_name", "title", "active", "centers"),
}  # fmt: skip
_DATES = frozenset({"valid_from", "valid_to"})


def _wire(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


def state_of(kind: str, row: Any, centers: list[str] | None = None) -> dict[str, Any]:
    """The versioned state of a live row, JSON-ready."""
    state = {f: _wire(getattr(row, f)) for f in FIELDS[kind] if f != "centers"}
    if kind == "account":
        state["centers"] = sorted(centers or [])
    return state


def apply_state(kind: str, row: Any, state: Mapping[str, Any]) -> None:
    """Write a revision's state into ``row`` (a live row, or a detached copy in the snapshot)."""
    for name in FIELDS[kind]:
        if name == "centers" or name not in state:
            continue
        value = state[name]
        setattr(row, name, date.fromisoformat(value) if name in _DATES and value else value)
