"""SLA minutes per modality and body part (DESIGN "Policy facts"): the published report time limits of a
Chinese hospital are per exam, not per priority alone, so the most specific rule wins.

A center's ``sla_minutes`` may add keys ``"<priority>/<MODALITY>"`` and ``"<priority>/<MODALITY>/<BODYPART>"``
(e.g. ``"stat/CT/HEAD": 20``); its plain ``"stat"``/``"urgent"``/``"routine"`` minutes are the fallback for
exams no rule names. Lookup order: the center's body-part key, the center's modality key, the default
body-part rule, the default modality rule, the center's priority, the service default.
"""

from __future__ import annotations

from collections.abc import Mapping

from telenet.domain.errors import Invalid
from telenet.domain.lifecycle import Kind, Priority
from telenet.domain.sla import sla_minutes_for

XRAY = frozenset({"DX", "CR", "DR", "RF"})
CT_MR = frozenset({"CT", "MR"})
HEAD = frozenset({"HEAD", "BRAIN", "SKULL", "头", "头颅", "颅脑", "头部"})

# (priority, modalities, body parts or None, minutes, source)
DEFAULT_RULES: tuple[tuple[str, frozenset[str], frozenset[str] | None, int, str], ...] = (
    ("stat", CT_MR, HEAD, 30, "published: emergency head CT/MR 30 min"),
    ("stat", CT_MR, None, 60, "published: emergency CT/MR 60 min"),
    ("stat", XRAY, None, 30, "published: emergency X-ray 30 min"),
    ("routine", XRAY, None, 120, "published: routine X-ray 2 h"),
    ("routine", CT_MR, None, 240, "published: routine CT/MR 4 h"),
)


def _norm(value: str | None) -> str:
    return (value or "").strip().upper()


def _body_key(body_part: str | None) -> str:
    """The body part as the rules name it: any spelling of the head counts as HEAD."""
    body = _norm(body_part)
    return "HEAD" if body in HEAD or (body_part or "").strip() in HEAD else body


def validate_center_table(configured: Mapping[str, int] | None) -> None:
    """Compound keys name a known priority and a modality; minutes are positive integers."""
    for key, minutes in (configured or {}).items():
        parts = key.split("/")
        if parts[0] not in {p.value for p in Priority} or len(parts) > 3 or any(not p for p in parts):
            raise Invalid(f"SLA key {key!r}: priority[/MODALITY[/BODYPART]]", code="bad-sla")
        if isinstance(minutes, bool) or not isinstance(minutes, int) or minutes <= 0:
            raise Invalid(f"SLA minutes for {key!r} must be a positive integer", code="bad-sla")


def sla_minutes(
    kind: Kind | str,
    priority: Priority | str,
    modality: str | None,
    body_part: str | None,
    configured: Mapping[str, int] | None = None,
) -> int:
    """The report time limit of one request at a center whose table is ``configured``."""
    validate_center_table(configured)
    level = Priority(priority).value
    table = dict(configured or {})
    plain = {k: v for k, v in table.items() if "/" not in k}
    mod, body = _norm(modality), _body_key(body_part)
    if Kind(kind) is Kind.IMAGING and mod:
        for key in (f"{level}/{mod}/{body}" if body else None, f"{level}/{mod}"):
            if key and key in table:
                return table[key]
        for rule_priority, modalities, bodies, minutes, _source in DEFAULT_RULES:
            if rule_priority == level and mod in modalities and bodies is not None and body in bodies:
                return minutes
        for rule_priority, modalities, bodies, minutes, _source in DEFAULT_RULES:
            if rule_priority == level and mod in modalities and bodies is None:
                return minutes
    return sla_minutes_for(kind, plain)[level]
