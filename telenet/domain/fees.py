"""Fee schedule lookup, the inviting/invited split and settlement statements (收费、结算).

Money is always integer fen. A final report records one ledger line priced from the schedule and split
by the agreement's basis points; a refund is a new negative line that mirrors the original split,
never an edit. Settlement rows are built from the lines alone, so a statement always adds up to them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, tzinfo

from telenet.domain.errors import Invalid

BASIS_POINTS = 10_000
"""100 % in basis points: an agreement's invited share lies in ``0..BASIS_POINTS``."""


def _is_int(value: object) -> bool:
    # bool is an int subclass, but True fen is a bug, not a price.
    return isinstance(value, int) and not isinstance(value, bool)


# --- fee schedule ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeeScheduleEntry:
    """One price of the versioned schedule; ``None`` in a match field means "any".

    The effective period is inclusive at both ends; ``effective_to=None`` is open-ended.
    """

    service: str
    modality: str | None
    priority: str | None
    subspecialty: str | None
    price_fen: int
    effective_from: date
    effective_to: date | None

    @property
    def key(self) -> tuple[str, str | None, str | None, str | None]:
        """What the entry prices; two entries with one key must not be in force on the same day."""
        return (self.service, self.modality, self.priority, self.subspecialty)

    def in_force(self, on: date) -> bool:
        """True when ``on`` lies in the inclusive effective period."""
        return self.effective_from <= on and (self.effective_to is None or on <= self.effective_to)

    def specificity(self) -> tuple[bool, bool, bool]:
        """The precedence rank of the entry, compared lexicographically (see ``price_for``)."""
        return (self.subspecialty is not None, self.modality is not None, self.priority is not None)


def _periods_overlap(a: FeeScheduleEntry, b: FeeScheduleEntry) -> bool:
    a_ends_after_b_starts = a.effective_to is None or b.effective_from <= a.effective_to
    b_ends_after_a_starts = b.effective_to is None or a.effective_from <= b.effective_to
    return a_ends_after_b_starts and b_ends_after_a_starts


def validate_schedule(entries: Iterable[FeeScheduleEntry]) -> list[str]:
    """Every rule the schedule breaks, as readable messages naming the entry index; empty when valid.

    Rules: a non-empty service; the price is an int (not bool) and not negative; the effective period
    is ordered (``effective_to`` not before ``effective_from``; one-day periods are fine); two entries
    with the same key (service, modality, priority, subspecialty) never overlap in time.
    """
    items = list(entries)
    errors: list[str] = []
    for index, entry in enumerate(items):
        if not entry.service:
            errors.append(f"entry {index}: service is empty")
        if not _is_int(entry.price_fen):
            errors.append(f"entry {index}: price_fen must be an integer number of fen, got {entry.price_fen!r}")
        elif entry.price_fen < 0:
            errors.append(f"entry {index}: price_fen is negative ({entry.price_fen})")
        if entry.effective_to is not None and entry.effective_to < entry.effective_from:
            errors.append(
                f"entry {index}: effective_to {entry.effective_to.isoformat()} is before "
                f"effective_from {entry.effective_from.isoformat()}"
            )
    for i, first in enumerate(items):
        for j in range(i + 1, len(items)):
            second = items[j]
            if first.key == second.key and _periods_overlap(first, second):
                errors.append(f"entries {i} and {j}: same key {first.key!r} with overlapping effective periods")
    return errors


def price_for(
    entries: Iterable[FeeScheduleEntry],
    *,
    service: str,
    modality: str | None,
    priority: str | None,
    subspecialty: str | None,
    on: date,
) -> FeeScheduleEntry | None:
    """The most specific schedule entry in force on ``on`` for the service, or None when none applies.

    An entry applies when its service equals ``service``, each of its match fields is None ("any")
    or equal to the asked value, and ``on`` lies in its inclusive effective period. A None asked value
    (e.g. a consultation has no modality) matches only "any" entries.

    Precedence, from strongest to weakest, compared lexicographically:
      1. an exact sub-specialty beats "any" sub-specialty;
      2. then an exact modality beats "any" modality;
      3. then an exact priority beats "any" priority.
    So ``(subspecialty=neuro, modality=any)`` beats ``(subspecialty=any, modality=CT)``. In an invalid
    schedule with two equally specific entries in force, the later ``effective_from`` wins.
    """
    asked = (modality, priority, subspecialty)
    best: FeeScheduleEntry | None = None
    for entry in entries:
        if entry.service != service or not entry.in_force(on):
            continue
        fields = (entry.modality, entry.priority, entry.subspecialty)
        if any(value is not None and value != want for value, want in zip(fields, asked, strict=True)):
            continue
        if best is None or (entry.specificity(), entry.effective_from) > (
            best.specificity(),
            best.effective_from,
        ):
            best = entry
    return best


# --- split -------------------------------------------------------------------------------------------


def split_fee(price_fen: int, invited_share_bp: int) -> tuple[int, int]:
    """Split a price by the agreement's invited share: ``(inviting_fen, invited_fen)``.

    The invited side gets ``floor(price_fen * bp / 10000)`` computed in integers; the inviting side
    gets the rest, so the rounding remainder goes to the inviting side and the two always add up to
    the price. Negative prices follow the same floor rule, which is *not* the mirror of the positive
    split (``split_fee(-1, 5000) == (0, -1)``); a refund of a recorded line uses ``refund_split``.
    """
    if not _is_int(price_fen):
        raise Invalid(f"price_fen must be an integer number of fen, got {price_fen!r}")
    if not _is_int(invited_share_bp) or not 0 <= invited_share_bp <= BASIS_POINTS:
        raise Invalid(f"invited_share_bp must be an integer in 0..{BASIS_POINTS}, got {invited_share_bp!r}")
    invited = price_fen * invited_share_bp // BASIS_POINTS
    return (price_fen - invited, invited)


def refund_split(original: tuple[int, int]) -> tuple[int, int]:
    """The ``(inviting_fen, invited_fen)`` of a full refund: the exact negation of the original line.

    Recomputing the split of a negative price would round the other way; negating keeps every side's
    net at zero after a charge and its refund.
    """
    inviting, invited = original
    if not (_is_int(inviting) and _is_int(invited)):
        raise Invalid(f"the original split must be integer fen, got {original!r}")
    return (-inviting, -invited)


# --- settlement --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeeLine:
    """One append-only ledger line; ``refund_of`` is the id of the line a refund reverses."""

    id: int
    inviting_code: str
    invited_code: str
    service: str
    price_fen: int
    inviting_fen: int
    invited_fen: int
    refund_of: int | None
    at: datetime

    @property
    def is_refund(self) -> bool:
        return self.refund_of is not None


@dataclass(frozen=True)
class SettlementRow:
    """The statement of one (inviting, invited) institution pair over a period.

    ``gross_fen`` is the sum of the prices of charges and refunds (refunds are negative), and
    ``inviting_fen + invited_fen == gross_fen`` always holds.
    """

    inviting_code: str
    invited_code: str
    charges: int
    refunds: int
    gross_fen: int
    inviting_fen: int
    invited_fen: int


def check_line(line: FeeLine) -> None:
    """Raise Invalid when a ledger line cannot be settled: non-integer fen, a split that does not add
    up to the price, a negative charge or a positive refund."""
    amounts = (line.price_fen, line.inviting_fen, line.invited_fen)
    if not all(_is_int(amount) for amount in amounts):
        raise Invalid(f"fee line {line.id}: amounts must be integer fen, got {amounts!r}")
    if line.inviting_fen + line.invited_fen != line.price_fen:
        raise Invalid(
            f"fee line {line.id}: inviting {line.inviting_fen} + invited {line.invited_fen} != price {line.price_fen}"
        )
    if line.is_refund and line.price_fen > 0:
        raise Invalid(f"fee line {line.id}: a refund must not be positive ({line.price_fen})")
    if not line.is_refund and line.price_fen < 0:
        raise Invalid(f"fee line {line.id}: a charge must not be negative ({line.price_fen})")


def settle(
    lines: Iterable[FeeLine], *, start: datetime | None = None, end: datetime | None = None
) -> list[SettlementRow]:
    """Group ledger lines by (inviting, invited) institution into statement rows.

    Only lines with ``start <= at < end`` count (a missing bound is open), so consecutive periods
    never count a line twice. Every counted line is checked with ``check_line``. Rows are sorted by
    (inviting_code, invited_code); pairs without lines in the period have no row.
    """
    totals: dict[tuple[str, str], list[int]] = {}
    for line in lines:
        if (start is not None and line.at < start) or (end is not None and line.at >= end):
            continue
        check_line(line)
        acc = totals.setdefault((line.inviting_code, line.invited_code), [0, 0, 0, 0, 0])
        acc[1 if line.is_refund else 0] += 1
        acc[2] += line.price_fen
        acc[3] += line.inviting_fen
        acc[4] += line.invited_fen
    return [
        SettlementRow(inviting, invited, charges, refunds, gross, inviting_fen, invited_fen)
        for (inviting, invited), (charges, refunds, gross, inviting_fen, invited_fen) in sorted(totals.items())
    ]


def settlement_total(rows: Sequence[SettlementRow]) -> tuple[int, int, int]:
    """``(gross_fen, inviting_fen, invited_fen)`` over a statement's rows."""
    return (
        sum(row.gross_fen for row in rows),
        sum(row.inviting_fen for row in rows),
        sum(row.invited_fen for row in rows),
    )


def period_bounds(period: str, tz: tzinfo | None = None) -> tuple[datetime, datetime]:
    """The half-open ``[start, end)`` of a ``YYYY-MM`` settlement month, in ``tz`` (naive when None)."""
    parts = period.split("-")
    shape_ok = len(parts) == 2 and len(parts[0]) == 4 and len(parts[1]) == 2
    if not shape_ok or not all(p.isascii() and p.isdigit() for p in parts):
        raise Invalid(f"period must look like YYYY-MM, got {period!r}")
    year, month = int(parts[0]), int(parts[1])
    if not 1 <= month <= 12 or year < 1 or (year, month) == (9999, 12):
        raise Invalid(f"period must look like YYYY-MM, got {period!r}")
    start = datetime(year, month, 1, tzinfo=tz)
    end = datetime(year + 1, 1, 1, tzinfo=tz) if month == 12 else datetime(year, month + 1, 1, tzinfo=tz)
    return (start, end)
