"""Fee schedule precedence and dates, the integer split, refunds and settlement totals."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telenet.domain.errors import Invalid
from telenet.domain.fees import (
    BASIS_POINTS,
    FeeLine,
    FeeScheduleEntry,
    SettlementRow,
    check_line,
    period_bounds,
    price_for,
    refund_split,
    settle,
    settlement_total,
    split_fee,
    validate_schedule,
)


def entry(
    service: str = "imaging",
    modality: str | None = None,
    priority: str | None = None,
    subspecialty: str | None = None,
    price_fen: int = 5000,
    effective_from: date = date(2024, 1, 1),
    effective_to: date | None = None,
) -> FeeScheduleEntry:
    return FeeScheduleEntry(service, modality, priority, subspecialty, price_fen, effective_from, effective_to)


# --- split -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "bp", "expected"),
    [
        (0, 5000, (0, 0)),
        (1, 5000, (1, 0)),  # the odd fen goes to the inviting side
        (1, 10000, (0, 1)),
        (1, 0, (1, 0)),
        (3, 3333, (3, 0)),  # 3 * 3333 // 10000 == 0
        (100, 3333, (67, 33)),
        (10001, 5000, (5001, 5000)),
        (12345, 7000, (3704, 8641)),  # 12345 * 0.7 = 8641.5 -> 8641 invited
        (9999, 1, (9999, 0)),
        (10000, 1, (9999, 1)),
        (-1, 5000, (0, -1)),  # floor of a negative price: not the mirror of +1, see refund_split
        (-12345, 7000, (-3703, -8642)),
    ],
)
def test_split_table(price: int, bp: int, expected: tuple[int, int]) -> None:
    assert split_fee(price, bp) == expected


@pytest.mark.parametrize("bp", [-1, 10001, 2.5, True, "5000"])
def test_split_rejects_bad_basis_points(bp: object) -> None:
    with pytest.raises(Invalid):
        split_fee(100, bp)  # type: ignore[arg-type]


@pytest.mark.parametrize("price", [1.5, 100.0, True, "100", None])
def test_split_rejects_non_integer_price(price: object) -> None:
    with pytest.raises(Invalid):
        split_fee(price, 5000)  # type: ignore[arg-type]


prices = st.one_of(st.sampled_from([0, 1, 2, 9999, 10000, 10001, 10**15]), st.integers(0, 10**18))
bps = st.one_of(st.sampled_from([0, 1, 5000, 9999, 10000]), st.integers(0, BASIS_POINTS))


@given(price=st.one_of(prices, prices.map(lambda p: -p)), bp=bps)
def test_split_adds_up_and_floors(price: int, bp: int) -> None:
    inviting, invited = split_fee(price, bp)
    assert inviting + invited == price
    assert invited == price * bp // 10000
    # exact integer arithmetic: no float rounding even for huge prices
    assert isinstance(inviting, int) and isinstance(invited, int)


@given(price=prices, bp=bps)
def test_remainder_goes_to_inviting_side(price: int, bp: int) -> None:
    inviting, invited = split_fee(price, bp)
    assert 0 <= invited <= price
    # the invited share never exceeds its exact rational share; the inviting one never falls below its own
    assert invited * 10000 <= price * bp
    assert inviting * 10000 >= price * (10000 - bp)
    assert inviting * 10000 - price * (10000 - bp) < 10000


@given(price=prices, bp=bps)
def test_refund_mirrors_original(price: int, bp: int) -> None:
    original = split_fee(price, bp)
    refund = refund_split(original)
    assert refund == (-original[0], -original[1])
    assert sum(refund) == -price
    assert original[0] + refund[0] == 0 and original[1] + refund[1] == 0


def test_refund_split_rejects_non_integers() -> None:
    with pytest.raises(Invalid):
        refund_split((1.5, 2))  # type: ignore[arg-type]


# --- schedule ----------------------------------------------------------------------------------------


def test_valid_schedule_has_no_errors() -> None:
    schedule = [
        entry(price_fen=0),
        entry(modality="CT", price_fen=12000, effective_to=date(2024, 6, 30)),
        entry(modality="CT", price_fen=13000, effective_from=date(2024, 7, 1)),
        entry(service="ecg", price_fen=2000, effective_from=date(2024, 3, 1), effective_to=date(2024, 3, 1)),
    ]
    assert validate_schedule(schedule) == []


@pytest.mark.parametrize(
    ("bad", "fragment"),
    [
        (entry(price_fen=-1), "negative"),
        (entry(price_fen=10.5), "integer"),  # type: ignore[arg-type]
        (entry(price_fen=True), "integer"),
        (entry(effective_from=date(2024, 2, 1), effective_to=date(2024, 1, 31)), "before"),
        (entry(service=""), "service"),
    ],
)
def test_schedule_entry_errors(bad: FeeScheduleEntry, fragment: str) -> None:
    errors = validate_schedule([bad])
    assert len(errors) == 1
    assert fragment in errors[0] and errors[0].startswith("entry 0")


@pytest.mark.parametrize(
    ("first", "second", "overlap"),
    [
        ((date(2024, 1, 1), date(2024, 6, 30)), (date(2024, 7, 1), None), False),
        (
            (date(2024, 1, 1), date(2024, 6, 30)),
            (date(2024, 6, 30), None),
            True,
        ),  # inclusive ends share a day
        ((date(2024, 1, 1), None), (date(2030, 1, 1), None), True),
        ((date(2024, 3, 1), date(2024, 3, 31)), (date(2024, 1, 1), date(2024, 12, 31)), True),
        ((date(2024, 3, 1), date(2024, 3, 31)), (date(2024, 4, 1), date(2024, 4, 1)), False),
    ],
)
def test_schedule_overlap(first: tuple[date, date | None], second: tuple[date, date | None], overlap: bool) -> None:
    a = entry(modality="CT", effective_from=first[0], effective_to=first[1])
    b = entry(modality="CT", effective_from=second[0], effective_to=second[1])
    errors = validate_schedule([a, b])
    assert bool(errors) is overlap
    if overlap:
        assert errors[0].startswith("entries 0 and 1")
    # a different key never conflicts
    assert validate_schedule([a, entry(modality="MR", effective_from=second[0], effective_to=second[1])]) == []


SCHEDULE = [
    entry(price_fen=100),  # imaging, anything
    entry(priority="stat", price_fen=200),
    entry(modality="CT", price_fen=300),
    entry(modality="CT", priority="stat", price_fen=400),
    entry(subspecialty="neuro", price_fen=500),
    entry(subspecialty="neuro", priority="stat", price_fen=600),
    entry(modality="CT", subspecialty="neuro", price_fen=700),
    entry(modality="CT", priority="stat", subspecialty="neuro", price_fen=800),
    entry(service="consultation", price_fen=900),
    entry(service="consultation", subspecialty="cardio", price_fen=1000),
]


@pytest.mark.parametrize(
    ("service", "modality", "priority", "subspecialty", "price"),
    [
        ("imaging", "DR", "routine", None, 100),
        ("imaging", "DR", "stat", None, 200),
        ("imaging", "CT", "routine", None, 300),
        ("imaging", "CT", "stat", None, 400),
        # sub-specialty beats modality: (neuro, any modality) wins over (any, CT)
        ("imaging", "MR", "routine", "neuro", 500),
        ("imaging", "MR", "stat", "neuro", 600),
        ("imaging", "CT", "routine", "neuro", 700),
        ("imaging", "CT", "stat", "neuro", 800),
        ("imaging", "CT", "urgent", "chest", 300),
        ("consultation", None, "urgent", None, 900),
        ("consultation", None, "urgent", "cardio", 1000),
        ("ecg", "ECG", "routine", None, None),
    ],
)
def test_price_for_precedence(
    service: str, modality: str | None, priority: str | None, subspecialty: str | None, price: int | None
) -> None:
    found = price_for(
        SCHEDULE,
        service=service,
        modality=modality,
        priority=priority,
        subspecialty=subspecialty,
        on=date(2024, 5, 1),
    )
    assert (found.price_fen if found else None) == price


def test_precedence_order_is_subspecialty_then_modality_then_priority() -> None:
    by_modality = entry(modality="CT", price_fen=1)
    by_priority = entry(priority="stat", price_fen=2)
    by_subspecialty = entry(subspecialty="neuro", price_fen=3)
    ask = {"service": "imaging", "modality": "CT", "priority": "stat", "on": date(2024, 5, 1)}
    assert price_for([by_priority, by_modality], subspecialty=None, **ask) == by_modality  # type: ignore[arg-type]
    assert price_for([by_modality, by_subspecialty], subspecialty="neuro", **ask) == by_subspecialty  # type: ignore[arg-type]


def test_none_asked_value_matches_only_any() -> None:
    only_ct = [entry(modality="CT")]
    assert (
        price_for(only_ct, service="imaging", modality=None, priority=None, subspecialty=None, on=date(2024, 5, 1))
        is None
    )


@pytest.mark.parametrize(
    ("on", "price"),
    [
        (date(2023, 12, 31), None),
        (date(2024, 1, 1), 100),  # effective_from inclusive
        (date(2024, 6, 30), 100),  # effective_to inclusive
        (date(2024, 7, 1), 150),
        (date(2099, 1, 1), 150),  # open-ended
    ],
)
def test_price_for_effective_dates(on: date, price: int | None) -> None:
    versions = [
        entry(modality="CT", price_fen=100, effective_to=date(2024, 6, 30)),
        entry(modality="CT", price_fen=150, effective_from=date(2024, 7, 1)),
    ]
    found = price_for(versions, service="imaging", modality="CT", priority="routine", subspecialty=None, on=on)
    assert (found.price_fen if found else None) == price


def test_general_entry_in_force_beats_specific_entry_out_of_force() -> None:
    schedule = [entry(price_fen=100), entry(modality="CT", price_fen=300, effective_to=date(2024, 1, 31))]
    found = price_for(schedule, service="imaging", modality="CT", priority=None, subspecialty=None, on=date(2024, 2, 1))
    assert found is not None and found.price_fen == 100


def test_invalid_schedule_tie_takes_latest_version() -> None:
    older = entry(modality="CT", price_fen=100, effective_from=date(2024, 1, 1))
    newer = entry(modality="CT", price_fen=200, effective_from=date(2024, 3, 1))
    assert validate_schedule([newer, older])
    for order in ([older, newer], [newer, older]):
        found = price_for(
            order, service="imaging", modality="CT", priority=None, subspecialty=None, on=date(2024, 4, 1)
        )
        assert found == newer


# --- settlement --------------------------------------------------------------------------------------

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def line(
    id: int,
    price: int,
    bp: int = 6000,
    *,
    pair: tuple[str, str] = ("TWN1", "CTY1"),
    refund_of: FeeLine | None = None,
    at: datetime = T0,
) -> FeeLine:
    if refund_of is None:
        inviting, invited = split_fee(price, bp)
        return FeeLine(id, pair[0], pair[1], "imaging", price, inviting, invited, None, at)
    inviting, invited = refund_split((refund_of.inviting_fen, refund_of.invited_fen))
    return FeeLine(
        id=id,
        inviting_code=refund_of.inviting_code,
        invited_code=refund_of.invited_code,
        service=refund_of.service,
        price_fen=-refund_of.price_fen,
        inviting_fen=inviting,
        invited_fen=invited,
        refund_of=refund_of.id,
        at=at,
    )


def test_settle_table() -> None:
    a = line(1, 5001, pair=("VIL2", "CTY1"))
    b = line(2, 3000, pair=("TWN1", "CTY1"))
    c = line(3, 12001, pair=("TWN1", "CTY1"))
    d = line(4, 0, refund_of=b, at=T0 + timedelta(days=2))
    e = line(5, 700, pair=("TWN1", "CNT1"), at=T0 + timedelta(days=40))  # next month
    start, end = period_bounds("2024-05", UTC)
    rows = settle([e, d, c, b, a], start=start, end=end)
    assert rows == [
        SettlementRow("TWN1", "CTY1", charges=2, refunds=1, gross_fen=12001, inviting_fen=4801, invited_fen=7200),
        SettlementRow("VIL2", "CTY1", charges=1, refunds=0, gross_fen=5001, inviting_fen=2001, invited_fen=3000),
    ]
    assert settlement_total(rows) == (17002, 6802, 10200)
    assert settle([]) == []
    assert [r.invited_code for r in settle([a, b, e])] == ["CNT1", "CTY1", "CTY1"]


def test_period_is_half_open() -> None:
    start, end = period_bounds("2024-05", UTC)
    on_start, on_end = line(1, 100, at=start), line(2, 100, at=end)
    assert [r.charges for r in settle([on_start, on_end], start=start, end=end)] == [1]
    assert [r.charges for r in settle([on_start, on_end], start=end)] == [1]


@pytest.mark.parametrize(
    ("period", "expected"),
    [
        ("2024-01", (datetime(2024, 1, 1), datetime(2024, 2, 1))),
        ("2024-12", (datetime(2024, 12, 1), datetime(2025, 1, 1))),
        ("2024-02", (datetime(2024, 2, 1), datetime(2024, 3, 1))),
    ],
)
def test_period_bounds(period: str, expected: tuple[datetime, datetime]) -> None:
    assert period_bounds(period) == expected
    cst = timezone(timedelta(hours=8))
    start, end = period_bounds(period, cst)
    assert start.tzinfo is cst and (start.replace(tzinfo=None), end.replace(tzinfo=None)) == expected


@pytest.mark.parametrize("period", ["2024-13", "2024-00", "2024-5", "24-05", "2024/05", "", "２０２４-05", "9999-12"])
def test_period_bounds_rejects(period: str) -> None:
    with pytest.raises(Invalid):
        period_bounds(period)


@pytest.mark.parametrize(
    "bad",
    [
        FeeLine(1, "A", "B", "imaging", 100, 50, 49, None, T0),  # does not add up
        FeeLine(1, "A", "B", "imaging", -100, -50, -50, None, T0),  # negative charge
        FeeLine(2, "A", "B", "imaging", 100, 50, 50, 1, T0),  # positive refund
        FeeLine(1, "A", "B", "imaging", 100, 50.0, 50, None, T0),  # type: ignore[arg-type]
    ],
)
def test_settle_rejects_inconsistent_lines(bad: FeeLine) -> None:
    with pytest.raises(Invalid):
        check_line(bad)
    with pytest.raises(Invalid):
        settle([bad])


codes = st.sampled_from(["PRV", "CTY1", "CTY2", "CNT1", "TWN1", "VIL1"])


@st.composite
def ledgers(draw: st.DrawFn) -> list[FeeLine]:
    charges = draw(
        st.lists(st.tuples(codes, codes, st.integers(0, 10**9), bps, st.integers(0, 60 * 24 * 90)), max_size=40)
    )
    lines: list[FeeLine] = []
    for i, (inviting, invited, price, bp, minutes) in enumerate(charges, start=1):
        lines.append(line(i, price, bp, pair=(inviting, invited), at=T0 + timedelta(minutes=minutes)))
    for original in draw(st.lists(st.sampled_from(lines), unique_by=lambda x: x.id)) if lines else []:
        lines.append(line(len(lines) + 1, 0, refund_of=original, at=original.at + timedelta(days=1)))
    return draw(st.permutations(lines))


@given(lines=ledgers())
def test_settlement_always_adds_up(lines: list[FeeLine]) -> None:
    rows = settle(lines)
    assert rows == sorted(rows, key=lambda r: (r.inviting_code, r.invited_code))
    assert len({(r.inviting_code, r.invited_code) for r in rows}) == len(rows)
    for row in rows:
        mine = [x for x in lines if (x.inviting_code, x.invited_code) == (row.inviting_code, row.invited_code)]
        assert row.inviting_fen + row.invited_fen == row.gross_fen
        assert row.gross_fen == sum(x.price_fen for x in mine)
        assert row.inviting_fen == sum(x.inviting_fen for x in mine)
        assert row.invited_fen == sum(x.invited_fen for x in mine)
        assert row.charges == sum(1 for x in mine if x.refund_of is None)
        assert row.refunds == sum(1 for x in mine if x.refund_of is not None)
    assert settlement_total(rows) == (
        sum(x.price_fen for x in lines),
        sum(x.inviting_fen for x in lines),
        sum(x.invited_fen for x in lines),
    )
    # a charge and its refund net to zero on both sides
    refunded = {x.refund_of for x in lines if x.refund_of is not None}
    pairs = [x for x in lines if x.id in refunded or x.refund_of is not None]
    assert sum(x.inviting_fen for x in pairs) == 0 and sum(x.invited_fen for x in pairs) == 0


@given(lines=ledgers(), cut=st.integers(0, 60 * 24 * 100))
def test_consecutive_periods_partition_the_ledger(lines: list[FeeLine], cut: int) -> None:
    middle = T0 + timedelta(minutes=cut)
    before, after = settle(lines, end=middle), settle(lines, start=middle)
    whole = settlement_total(settle(lines))
    parts = [settlement_total(before), settlement_total(after)]
    assert tuple(a + b for a, b in zip(*parts, strict=True)) == whole
