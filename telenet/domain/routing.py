"""Which center a request goes to, and why (DESIGN "Routing").

The service layer gathers the candidate centers (with their agreement status and current load) and
the network's explicit rules; ``choose_center`` decides and explains every candidate, so the decision
can be stored in the route history as it was made.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple
from zoneinfo import ZoneInfo

from telenet.domain.errors import Invalid
from telenet.domain.tiers import Tier, is_within

LOCAL_TZ = ZoneInfo("Asia/Shanghai")
"""Opening hours are written in the network's local time."""

DAY_NAMES: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_INDEX = {name: i for i, name in enumerate(DAY_NAMES)}
_TIME = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])$")
_MINUTES_PER_DAY = 24 * 60
_WINDOW_KEYS = frozenset({"days", "from", "to"})


# --------------------------------------------------------------------------- opening hours


@dataclass(frozen=True)
class OpeningWindow:
    """Open on ``days`` (0 = Monday) from ``opens`` to ``closes`` (minutes after local midnight).

    ``closes`` is exclusive and may be 1440 (24:00). When ``closes < opens`` the window spans
    midnight: it opens on one of ``days`` and closes on the following day.
    """

    days: frozenset[int]
    opens: int
    closes: int

    @property
    def spans_midnight(self) -> bool:
        return self.closes < self.opens

    def contains(self, weekday: int, minute: int) -> bool:
        """True when local ``weekday`` / ``minute`` of the day falls inside this window."""
        if not self.spans_midnight:
            return weekday in self.days and self.opens <= minute < self.closes
        if weekday in self.days and minute >= self.opens:
            return True
        return (weekday - 1) % 7 in self.days and minute < self.closes

    def __str__(self) -> str:
        days = ",".join(DAY_NAMES[d] for d in sorted(self.days)) if len(self.days) < 7 else "daily"
        return f"{days} {_hhmm(self.opens)}-{_hhmm(self.closes)}"


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _parse_days(text: object, where: str, errors: list[str]) -> frozenset[int]:
    if not isinstance(text, str) or not text.strip():
        errors.append(f'{where}.days: expected a string such as "mon-fri", "mon,wed" or "daily", got {text!r}')
        return frozenset()
    spec = text.strip().lower()
    if spec == "daily":
        return frozenset(range(7))
    days: set[int] = set()
    for part in spec.split(","):
        bounds = [bound.strip() for bound in part.split("-")]
        if len(bounds) > 2 or any(bound not in _DAY_INDEX for bound in bounds):
            errors.append(
                f"{where}.days: {part.strip()!r} in {text!r} is not a day or a day range "
                f'(days are {", ".join(DAY_NAMES)}; or use "daily")'
            )
            continue
        first, last = _DAY_INDEX[bounds[0]], _DAY_INDEX[bounds[-1]]
        # A range may wrap around the week end ("fri-mon").
        days.update((first + step) % 7 for step in range((last - first) % 7 + 1))
    return frozenset(days)


def _parse_time(text: object, where: str, errors: list[str], *, allow_24: bool) -> int | None:
    if allow_24 and text == "24:00":
        return _MINUTES_PER_DAY
    match = _TIME.match(text) if isinstance(text, str) else None
    if match is None:
        hint = ' or "24:00"' if allow_24 else ""
        errors.append(f"{where}: expected a time HH:MM (00:00-23:59{hint}), got {text!r}")
        return None
    return int(match.group(1)) * 60 + int(match.group(2))


def parse_opening_hours(value: object) -> tuple[OpeningWindow, ...] | None:
    """Opening hours from their stored form; ``None`` means open 24/7.

    ``value`` is ``None`` or a non-empty list of ``{"days", "from", "to"}`` objects in local time
    (Asia/Shanghai). Every problem is reported at once in one ``Invalid`` whose ``details`` lists them.
    """
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise Invalid(
            f"opening_hours must be null (open 24/7) or a list of windows, got {type(value).__name__}",
            code="invalid-opening-hours",
            details={"errors": ["opening_hours: not a list"]},
        )
    if not value:
        raise Invalid(
            "opening_hours is an empty list, which would mean never open; use null for 24/7",
            code="invalid-opening-hours",
            details={"errors": ["opening_hours: empty list"]},
        )
    errors: list[str] = []
    windows: list[OpeningWindow] = []
    for index, item in enumerate(value):
        where = f"opening_hours[{index}]"
        if not isinstance(item, Mapping):
            errors.append(f"{where}: expected an object with days, from and to, got {item!r}")
            continue
        missing = sorted(_WINDOW_KEYS - set(item))
        unknown = sorted(str(key) for key in set(item) - _WINDOW_KEYS)
        if missing:
            errors.append(f"{where}: missing {', '.join(missing)}")
        if unknown:
            errors.append(f"{where}: unknown key(s) {', '.join(unknown)} (expected days, from, to)")
        if missing:
            continue
        days = _parse_days(item["days"], where, errors)
        opens = _parse_time(item["from"], f"{where}.from", errors, allow_24=False)
        closes = _parse_time(item["to"], f"{where}.to", errors, allow_24=True)
        if opens is None or closes is None or not days:
            continue
        if opens == closes:
            errors.append(f"{where}: from and to are both {item['from']}; a whole day is written 00:00-24:00")
            continue
        windows.append(OpeningWindow(days, opens, closes))
    if errors:
        raise Invalid(
            "invalid opening hours: " + "; ".join(errors),
            code="invalid-opening-hours",
            details={"errors": errors},
        )
    return tuple(windows)


def _require_aware(at: datetime, name: str) -> None:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {at.isoformat()}")


def is_open(windows: Sequence[OpeningWindow] | None, at_utc: datetime) -> bool:
    """True when a center with these opening hours is open at ``at_utc`` (``None`` = always open)."""
    _require_aware(at_utc, "at_utc")
    if windows is None:
        return True
    local = at_utc.astimezone(LOCAL_TZ)
    minute = local.hour * 60 + local.minute
    return any(window.contains(local.weekday(), minute) for window in windows)


# --------------------------------------------------------------------------- inputs and outputs


@dataclass(frozen=True)
class CenterCandidate:
    """A center as routing sees it; the service layer fills in the agreement status and the load."""

    code: str
    name: str
    institution_code: str
    institution_path: str
    tier: Tier
    service: str
    modalities: frozenset[str]
    subspecialties: frozenset[str]
    opening_hours: tuple[OpeningWindow, ...] | None
    capacity: int
    load: int
    agreement_in_force: bool


@dataclass(frozen=True)
class RouteQuery:
    """What is being routed and for whom; ``above_tier`` and ``exclude`` serve escalation and re-routing."""

    kind: str
    modality: str | None
    body_part: str | None
    subspecialty: str | None
    priority: str
    requester_code: str
    requester_path: str
    requester_tier: Tier
    above_tier: Tier | None = None
    exclude: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RouteRule:
    """An explicit network rule: requests matching every given field go to ``center_code``."""

    kind: str
    center_code: str
    modality: str | None = None
    body_part: str | None = None
    priority: str | None = None
    reason: str = field(kw_only=True)

    def matches(self, query: RouteQuery) -> bool:
        return (
            self.kind == query.kind
            and _same(self.modality, query.modality)
            and _same(self.body_part, query.body_part)
            and (self.priority is None or self.priority == query.priority)
        )


def _same(rule_value: str | None, query_value: str | None) -> bool:
    """A rule field matches when it is unset, or equal to the query's ignoring case and padding."""
    if rule_value is None:
        return True
    return query_value is not None and rule_value.strip().casefold() == query_value.strip().casefold()


class RankKey(NamedTuple):
    """The sort key of an eligible center: the smallest key wins. See ``rank_key``."""

    closed: bool
    below_requester: bool
    tier_steps: int
    full: bool
    not_ancestor: bool
    subspecialty_mismatch: bool
    load_ratio: float
    code: str


@dataclass(frozen=True)
class Considered:
    """One candidate and what routing made of it; ``rank_key`` is None for ineligible ones."""

    center_code: str
    eligible: bool
    reason: str
    rank_key: RankKey | None


@dataclass(frozen=True)
class RouteDecision:
    """The chosen center (None when there is none) and the reasoning, ready for the route history."""

    center_code: str | None
    reason: str
    considered: tuple[Considered, ...]


# --------------------------------------------------------------------------- the decision


def ineligibility(query: RouteQuery, center: CenterCandidate) -> tuple[str, ...]:
    """Why ``center`` cannot take ``query`` at all; empty when it is eligible."""
    reasons: list[str] = []
    if center.service != query.kind:
        reasons.append(f"serves {center.service}, not {query.kind}")
    elif query.modality and query.kind != "consultation" and not _reads(center, query.modality):
        reasons.append(f"does not read {query.modality.strip().upper()}")
    if not center.agreement_in_force:
        reasons.append("no agreement in force")
    if center.code in query.exclude:
        reasons.append("excluded from this route")
    if query.above_tier is not None and not center.tier.is_above(query.above_tier):
        reasons.append(f"tier {center.tier.value} is not above {query.above_tier.value}")
    return tuple(reasons)


def _reads(center: CenterCandidate, modality: str) -> bool:
    wanted = modality.strip().upper()
    return any(m.strip().upper() == wanted for m in center.modalities)


def _is_ancestor(query: RouteQuery, center: CenterCandidate) -> bool:
    return is_within(query.requester_path, center.institution_path)


def _subspecialty_mismatch(query: RouteQuery, center: CenterCandidate) -> bool:
    if not query.subspecialty:
        return False
    wanted = query.subspecialty.strip().casefold()
    return all(s.strip().casefold() != wanted for s in center.subspecialties)


def rank_key(query: RouteQuery, center: CenterCandidate, now: datetime) -> RankKey:
    """The sort key of an eligible center; candidates are compared field by field, smallest first.

    1. ``closed``: open centers first; a closed one wins only when no eligible center is open.
    2. ``below_requester`` / ``tier_steps``: nearest tier first, counting tiers up from the requester
       (its own institution 0, its county 1 for a township, then city, province); centers below the
       requester's tier come after all others.
    3. ``full``: at the same distance, centers with room (load < capacity) before full ones, so a full
       center loses to an open one of the same tier (but never sends work a tier up by itself).
    4. ``not_ancestor``: the requester's own ancestors (or itself) come before other institutions'
       centers reached through an agreement.
    5. ``subspecialty_mismatch``: when the request names a sub-specialty, centers covering it first.
    6. ``load_ratio``: the least loaded (load / capacity).
    7. ``code``: so equal centers are always ordered the same way.
    """
    steps = query.requester_tier.rank - center.tier.rank
    full = center.capacity <= 0 or center.load >= center.capacity
    return RankKey(
        closed=not is_open(center.opening_hours, now),
        below_requester=steps < 0,
        tier_steps=abs(steps),
        full=full,
        not_ancestor=not _is_ancestor(query, center),
        subspecialty_mismatch=_subspecialty_mismatch(query, center),
        load_ratio=center.load / center.capacity if center.capacity > 0 else float("inf"),
        code=center.code,
    )


def describe(query: RouteQuery, center: CenterCandidate, key: RankKey) -> str:
    """The human-readable form of a rank key, e.g. "ancestor at tier county, open, load 3/20"."""
    if center.institution_path == query.requester_path:
        place = "requester's own institution"
    elif not key.not_ancestor:
        place = f"ancestor at tier {center.tier.value}"
    else:
        place = f"not an ancestor, tier {center.tier.value}"
    parts = [place]
    if query.subspecialty:
        verb = "does not cover" if key.subspecialty_mismatch else "covers"
        parts.append(f"{verb} {query.subspecialty}")
    parts.append("closed now" if key.closed else "open")
    load = f"{center.load}/{center.capacity}"
    parts.append(f"full ({load})" if key.full else f"load {load}")
    return ", ".join(parts)


def _nothing_eligible(query: RouteQuery, considered: Sequence[Considered]) -> str:
    if query.kind == "consultation" or not query.modality:
        what = f"serves {query.kind}"
    else:
        what = f"reads {query.modality.strip().upper()}"
    if query.subspecialty:
        what += f" ({query.subspecialty})"
    if query.above_tier is not None:
        what += f" above tier {query.above_tier.value}"
    if query.exclude:
        what += f" other than {', '.join(sorted(query.exclude))}"
    reason = f"no center {what} for this institution ({query.requester_code}) under an agreement in force"
    if considered:
        ordered = sorted(considered, key=lambda c: c.center_code)
        reason += "; considered " + "; ".join(f"{c.center_code}: {c.reason}" for c in ordered)
    else:
        reason += "; no candidate centers"
    return reason


def choose_center(
    query: RouteQuery,
    candidates: Sequence[CenterCandidate],
    rules: Sequence[RouteRule],
    now: datetime,
) -> RouteDecision:
    """Pick the center for ``query`` and explain every candidate.

    Explicit rules are tried first, in order: the first matching rule whose center is eligible and
    open wins. Otherwise eligible centers are ranked by ``rank_key``. With no eligible center the
    decision has ``center_code=None`` and a reason saying why (the caller reports it as 422).
    """
    _require_aware(now, "now")
    by_code = {center.code: center for center in candidates}
    if len(by_code) != len(candidates):
        raise ValueError("candidate center codes must be unique")
    keys: dict[str, RankKey] = {}
    refused: dict[str, tuple[str, ...]] = {}
    for center in candidates:
        why_not = ineligibility(query, center)
        if why_not:
            refused[center.code] = why_not
        else:
            keys[center.code] = rank_key(query, center, now)

    chosen, chosen_reason, skipped = _apply_rules(query, rules, by_code, keys, refused)
    ranked = sorted(keys, key=keys.__getitem__)
    position = {code: index + 1 for index, code in enumerate(ranked)}
    if chosen is None and ranked:
        chosen = ranked[0]
        best = keys[chosen]
        detail = describe(query, by_code[chosen], best)
        if best.closed:
            chosen_reason = f"chosen although closed now, as no eligible center is open: {detail}"
        else:
            chosen_reason = f"chosen: {detail}"
        if skipped:
            chosen_reason += " (" + "; ".join(skipped.values()) + ")"

    considered: list[Considered] = []
    for center in candidates:
        key = keys.get(center.code)
        if key is None:
            reason = "; ".join(refused[center.code])
        elif center.code == chosen:
            reason = chosen_reason
        else:
            reason = f"eligible, ranked {position[center.code]}: {describe(query, center, key)}"
        if center.code in skipped and center.code != chosen:
            reason = f"{reason} ({skipped[center.code]})"
        considered.append(Considered(center.code, key is not None, reason, key))

    if chosen is None:
        reason = _nothing_eligible(query, considered)
        if any(code not in by_code for code in skipped):
            reason += " (" + "; ".join(skipped.values()) + ")"
        return RouteDecision(None, reason, tuple(considered))
    return RouteDecision(chosen, chosen_reason, tuple(considered))


def _apply_rules(
    query: RouteQuery,
    rules: Sequence[RouteRule],
    by_code: Mapping[str, CenterCandidate],
    keys: Mapping[str, RankKey],
    refused: Mapping[str, tuple[str, ...]],
) -> tuple[str | None, str, dict[str, str]]:
    """The first matching rule whose center is eligible and open, and why earlier matching rules were not."""
    skipped: dict[str, str] = {}
    for rule in rules:
        if not rule.matches(query):
            continue
        key = keys.get(rule.center_code)
        if key is not None and not key.closed:
            return rule.center_code, f"chosen by rule: {rule.reason}", skipped
        if rule.center_code not in by_code:
            status = "not a candidate for this requester"
        elif key is None:
            status = "; ".join(refused[rule.center_code])
        else:
            status = "closed now"
        skipped.setdefault(rule.center_code, f"rule '{rule.reason}' to {rule.center_code} skipped: {status}")
    return None, "", skipped
