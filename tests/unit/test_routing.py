"""Routing: opening hours in Asia/Shanghai, eligibility, ranking, rules, and the reasons given."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telenet.domain.errors import Invalid
from telenet.domain.routing import (
    CenterCandidate,
    OpeningWindow,
    RouteDecision,
    RouteQuery,
    RouteRule,
    choose_center,
    is_open,
    parse_opening_hours,
)
from telenet.domain.tiers import Tier, is_within

SHANGHAI = timezone(timedelta(hours=8))


def local(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    """A Shanghai wall-clock time as an aware UTC datetime."""
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI).astimezone(UTC)


# 2024-03-04 is a Monday.
WED_10 = local(2024, 3, 6, 10)
SAT_10 = local(2024, 3, 9, 10)

# --------------------------------------------------------------------------- opening hours


@pytest.mark.parametrize(
    ("spec", "days", "opens", "closes"),
    [
        ({"days": "mon-fri", "from": "08:00", "to": "17:30"}, {0, 1, 2, 3, 4}, 480, 1050),
        ({"days": "mon,wed", "from": "00:00", "to": "24:00"}, {0, 2}, 0, 1440),
        ({"days": "sat-sun", "from": "09:00", "to": "12:00"}, {5, 6}, 540, 720),
        ({"days": "daily", "from": "22:00", "to": "06:00"}, set(range(7)), 1320, 360),
        ({"days": "fri-mon", "from": "10:00", "to": "11:00"}, {4, 5, 6, 0}, 600, 660),
        ({"days": "mon-wed,fri", "from": "10:00", "to": "11:00"}, {0, 1, 2, 4}, 600, 660),
        ({"days": " Sat ", "from": "10:00", "to": "11:00"}, {5}, 600, 660),
    ],
)
def test_parse_opening_window(spec: dict[str, str], days: set[int], opens: int, closes: int) -> None:
    assert parse_opening_hours([spec]) == (OpeningWindow(frozenset(days), opens, closes),)


def test_null_means_always_open() -> None:
    assert parse_opening_hours(None) is None
    assert is_open(None, SAT_10)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("mon-fri", "must be null (open 24/7) or a list"),
        ([], "empty list"),
        (
            [{"days": "mon-funday", "from": "08:00", "to": "17:00"}],
            "'mon-funday' is not a day or a day range",
        ),
        ([{"days": "", "from": "08:00", "to": "17:00"}], "opening_hours[0].days: expected a string"),
        ([{"days": "mon", "from": "8:00", "to": "17:00"}], "opening_hours[0].from: expected a time HH:MM"),
        ([{"days": "mon", "from": "24:00", "to": "17:00"}], "opening_hours[0].from: expected a time HH:MM"),
        ([{"days": "mon", "from": "08:00", "to": "25:00"}], "opening_hours[0].to: expected a time"),
        ([{"days": "mon", "from": "08:00", "to": "08:00"}], "a whole day is written 00:00-24:00"),
        ([{"days": "mon", "from": "08:00"}], "opening_hours[0]: missing to"),
        ([{"days": "mon", "from": "08:00", "to": "09:00", "tz": "UTC"}], "unknown key(s) tz"),
        (["mon 08:00-17:00"], "expected an object"),
    ],
)
def test_bad_opening_hours_are_invalid(value: object, message: str) -> None:
    with pytest.raises(Invalid) as caught:
        parse_opening_hours(value)
    assert message in caught.value.message
    assert caught.value.code == "invalid-opening-hours"


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(Invalid) as caught:
        parse_opening_hours([{"days": "xyz", "from": "08:00", "to": "17:00"}, {"days": "mon", "from": "x", "to": "y"}])
    assert len(caught.value.details["errors"]) == 3


OFFICE = parse_opening_hours([{"days": "mon-fri", "from": "08:00", "to": "17:30"}])
NIGHT_FRI = parse_opening_hours([{"days": "fri", "from": "22:00", "to": "02:00"}])
WEEKDAYS = parse_opening_hours([{"days": "mon-fri", "from": "00:00", "to": "24:00"}])


@pytest.mark.parametrize(
    ("windows", "at", "expected"),
    [
        (OFFICE, local(2024, 3, 6, 8, 0), True),
        (OFFICE, local(2024, 3, 6, 7, 59), False),
        (OFFICE, local(2024, 3, 6, 17, 29), True),
        (OFFICE, local(2024, 3, 6, 17, 30), False),
        (OFFICE, SAT_10, False),
        # 01:00 UTC on a Wednesday is 09:00 in Shanghai: open although UTC says "before opening".
        (OFFICE, datetime(2024, 3, 6, 1, 0, tzinfo=UTC), True),
        # 12:00 UTC on a Wednesday is 20:00 in Shanghai: closed although UTC says "office hours".
        (OFFICE, datetime(2024, 3, 6, 12, 0, tzinfo=UTC), False),
        (NIGHT_FRI, local(2024, 3, 8, 21, 59), False),
        (NIGHT_FRI, local(2024, 3, 8, 22, 0), True),
        (NIGHT_FRI, local(2024, 3, 9, 1, 59), True),
        (NIGHT_FRI, local(2024, 3, 9, 2, 0), False),
        (NIGHT_FRI, local(2024, 3, 7, 23, 0), False),
        (NIGHT_FRI, local(2024, 3, 8, 1, 0), False),
        (WEEKDAYS, local(2024, 3, 8, 23, 59), True),
        # Friday 16:00 UTC is Saturday 00:00 in Shanghai.
        (WEEKDAYS, datetime(2024, 3, 8, 16, 0, tzinfo=UTC), False),
        (WEEKDAYS, datetime(2024, 3, 10, 15, 59, tzinfo=UTC), False),
        (WEEKDAYS, datetime(2024, 3, 10, 16, 0, tzinfo=UTC), True),
    ],
)
def test_is_open_in_shanghai_time(windows: tuple[OpeningWindow, ...], at: datetime, expected: bool) -> None:
    assert is_open(windows, at) is expected


def test_is_open_refuses_naive_datetimes() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        is_open(OFFICE, datetime(2024, 3, 6, 10, 0))


instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC))
day_specs = st.sampled_from(["daily", "mon", "fri", "sun", "mon-fri", "sat-sun", "fri-mon", "mon,wed,sun"])
clock_times = st.integers(min_value=0, max_value=1439)


def hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@given(instants, day_specs, clock_times, clock_times)
def test_a_window_across_midnight_is_two_windows(at: datetime, days: str, opens: int, closes: int) -> None:
    if closes >= opens:
        opens, closes = max(opens, closes), min(opens, closes)
    if opens == closes:
        return
    whole = parse_opening_hours([{"days": days, "from": hhmm(opens), "to": hhmm(closes)}])
    assert whole is not None
    (window,) = whole
    assert window.spans_midnight
    evening = OpeningWindow(window.days, opens, 1440)
    morning = OpeningWindow(frozenset((d + 1) % 7 for d in window.days), 0, closes)
    assert is_open(whole, at) == is_open((evening, morning), at)


@given(instants, day_specs, clock_times, clock_times)
def test_is_open_matches_the_shanghai_wall_clock(at: datetime, days: str, opens: int, closes: int) -> None:
    if closes <= opens:
        return
    windows = parse_opening_hours([{"days": days, "from": hhmm(opens), "to": hhmm(closes)}])
    assert windows is not None
    wall = at + timedelta(hours=8)  # Asia/Shanghai has had no daylight saving time since 1991
    minute = wall.hour * 60 + wall.minute
    assert is_open(windows, at) == (wall.weekday() in windows[0].days and opens <= minute < closes)
    assert is_open(windows, at.astimezone(SHANGHAI)) == is_open(windows, at)


# --------------------------------------------------------------------------- a five-tier network

PATHS = {
    "PROV": ("/PROV/", Tier.PROVINCE),
    "CITY": ("/PROV/CITY/", Tier.CITY),
    "K1": ("/PROV/CITY/K1/", Tier.COUNTY),
    "K2": ("/PROV/CITY/K2/", Tier.COUNTY),
    "T1": ("/PROV/CITY/K1/T1/", Tier.TOWNSHIP),
    "T2": ("/PROV/CITY/K2/T2/", Tier.TOWNSHIP),
    "V1": ("/PROV/CITY/K1/T1/V1/", Tier.VILLAGE),
}


def center(code: str, institution: str, service: str, modalities: str = "", **changes: Any) -> CenterCandidate:
    path, tier = PATHS[institution]
    base = CenterCandidate(
        code=code,
        name=f"{code} center",
        institution_code=institution,
        institution_path=path,
        tier=tier,
        service=service,
        modalities=frozenset(modalities.split()),
        subspecialties=frozenset(),
        opening_hours=None,
        capacity=20,
        load=3,
        agreement_in_force=True,
    )
    return replace(base, **changes)


NETWORK = (
    center("PROV-IMG", "PROV", "imaging", "DX CT MR US"),
    center("PROV-ECG", "PROV", "ecg", "ECG"),
    center("PROV-CONS", "PROV", "consultation", subspecialties=frozenset({"cardiology", "neuro"})),
    center("CITY-IMG", "CITY", "imaging", "DX CT MR US"),
    center("CITY-STROKE", "CITY", "imaging", "CT MR", subspecialties=frozenset({"neuro"})),
    center("CITY-ECG", "CITY", "ecg", "ECG"),
    center("CITY-CONS", "CITY", "consultation", subspecialties=frozenset({"cardiology"})),
    center("K1-IMG", "K1", "imaging", "DX CT US"),
    center("K1-ECG", "K1", "ecg", "ECG"),
    center("K2-IMG", "K2", "imaging", "DX CT"),
)


def query(requester: str, kind: str, modality: str | None = None, **changes: Any) -> RouteQuery:
    path, tier = PATHS[requester]
    base = RouteQuery(
        kind=kind,
        modality=modality,
        body_part=None,
        subspecialty=None,
        priority="routine",
        requester_code=requester,
        requester_path=path,
        requester_tier=tier,
    )
    return replace(base, **changes)


def swap(network: tuple[CenterCandidate, ...], code: str, **changes: Any) -> tuple[CenterCandidate, ...]:
    return tuple(replace(c, **changes) if c.code == code else c for c in network)


def reason_of(decision: RouteDecision, code: str) -> str:
    (entry,) = [c for c in decision.considered if c.center_code == code]
    return entry.reason


def route(
    q: RouteQuery,
    network: tuple[CenterCandidate, ...] = NETWORK,
    rules: tuple[RouteRule, ...] = (),
    now: datetime = WED_10,
    *,
    chain_agreements: bool = True,
) -> RouteDecision:
    """Route ``q``; by default agreements exist only along the requester's chain of ancestors
    (its county, city and province), as in a 医共体 / 医联体 led from above."""
    if chain_agreements:
        network = tuple(
            replace(c, agreement_in_force=c.agreement_in_force and is_within(q.requester_path, c.institution_path))
            for c in network
        )
    return choose_center(q, network, list(rules), now)


def test_township_xray_goes_to_its_county_imaging_center() -> None:
    decision = route(query("T1", "imaging", "DX"))
    assert decision.center_code == "K1-IMG"
    assert decision.reason == "chosen: ancestor at tier county, open, load 3/20"
    assert [c.center_code for c in decision.considered] == [c.code for c in NETWORK]
    assert reason_of(decision, "CITY-IMG") == "eligible, ranked 2: ancestor at tier city, open, load 3/20"
    assert reason_of(decision, "PROV-IMG") == "eligible, ranked 3: ancestor at tier province, open, load 3/20"
    assert reason_of(decision, "K2-IMG") == "no agreement in force"
    assert reason_of(decision, "CITY-STROKE") == "does not read DX"
    assert reason_of(decision, "K1-ECG") == "serves ecg, not imaging"


def test_village_xray_also_goes_to_its_county() -> None:
    assert route(query("V1", "imaging", "DX")).center_code == "K1-IMG"


def test_county_hospital_reads_in_its_own_center_first() -> None:
    decision = route(query("K1", "imaging", "CT"))
    assert decision.center_code == "K1-IMG"
    assert decision.reason == "chosen: requester's own institution, open, load 3/20"


def test_county_without_an_ecg_center_goes_to_the_city() -> None:
    decision = route(query("T2", "ecg", "ECG"))
    assert decision.center_code == "CITY-ECG"
    assert reason_of(decision, "PROV-ECG").startswith("eligible, ranked 2: ancestor at tier province")
    assert reason_of(decision, "K1-ECG") == "no agreement in force"


def test_a_peer_county_under_agreement_ranks_after_ancestors_of_its_tier_only() -> None:
    # With an agreement in force the neighbouring county's ECG center is one tier up from the
    # township, like its own county would be: it comes before the city.
    decision = route(query("T2", "ecg", "ECG"), chain_agreements=False)
    assert decision.center_code == "K1-ECG"
    assert decision.reason == "chosen: not an ancestor, tier county, open, load 3/20"
    # ... but after an ancestor of the same tier.
    network = (*NETWORK, center("K2-ECG", "K2", "ecg", "ECG", load=19))
    assert route(query("T2", "ecg", "ECG"), network, chain_agreements=False).center_code == "K2-ECG"


def test_a_modality_the_county_does_not_read_goes_up() -> None:
    decision = route(query("T1", "imaging", "MR"))
    assert decision.center_code == "CITY-IMG"
    assert reason_of(decision, "K1-IMG") == "does not read MR"


def test_a_closed_center_is_skipped_for_an_open_one() -> None:
    network = swap(NETWORK, "K1-IMG", opening_hours=OFFICE)
    assert route(query("T1", "imaging", "DX"), network).center_code == "K1-IMG"
    decision = route(query("T1", "imaging", "DX"), network, now=SAT_10)
    assert decision.center_code == "CITY-IMG"
    assert reason_of(decision, "K1-IMG") == "eligible, ranked 3: ancestor at tier county, closed now, load 3/20"


def test_the_best_closed_center_wins_when_none_is_open() -> None:
    network = tuple(replace(c, opening_hours=OFFICE) for c in NETWORK)
    decision = route(query("T1", "imaging", "DX"), network, now=SAT_10)
    assert decision.center_code == "K1-IMG"
    assert decision.reason == (
        "chosen although closed now, as no eligible center is open: ancestor at tier county, closed now, load 3/20"
    )


def test_a_full_center_loses_to_a_non_full_one_of_the_same_tier() -> None:
    network = (
        *swap(NETWORK, "K1-IMG", load=12, capacity=12),
        center("K1-IMG-B", "K1", "imaging", "DX", load=19, capacity=20),
    )
    decision = route(query("T1", "imaging", "DX"), network)
    assert decision.center_code == "K1-IMG-B"
    assert reason_of(decision, "K1-IMG") == "eligible, ranked 2: ancestor at tier county, open, full (12/12)"


def test_lower_load_ratio_wins_then_code() -> None:
    busier = (
        *swap(NETWORK, "K1-IMG", load=10, capacity=20),
        center("K1-IMG-B", "K1", "imaging", "DX", load=4, capacity=10),
    )
    assert route(query("T1", "imaging", "DX"), busier).center_code == "K1-IMG-B"
    same_ratio = (*NETWORK, center("K1-IMG-B", "K1", "imaging", "DX", load=6, capacity=40))
    assert route(query("T1", "imaging", "DX"), same_ratio).center_code == "K1-IMG"
    tie = (*NETWORK, center("K1-AAA", "K1", "imaging", "DX", load=3, capacity=20))
    assert route(query("T1", "imaging", "DX"), tie).center_code == "K1-AAA"


def test_a_full_ancestor_still_beats_a_farther_center() -> None:
    network = swap(NETWORK, "K1-IMG", load=30, capacity=20)
    decision = route(query("T1", "imaging", "DX"), network)
    assert decision.center_code == "K1-IMG"
    assert decision.reason == "chosen: ancestor at tier county, open, full (30/20)"


def test_no_agreement_means_no_center_with_a_reason() -> None:
    network = tuple(replace(c, agreement_in_force=False) for c in NETWORK)
    decision = route(query("T1", "imaging", "DX"), network)
    assert decision.center_code is None
    assert decision.reason.startswith("no center reads DX for this institution (T1) under an agreement in force;")
    assert "K1-IMG: no agreement in force" in decision.reason
    assert reason_of(decision, "K1-IMG") == "no agreement in force"
    assert reason_of(decision, "CITY-STROKE") == "does not read DX; no agreement in force"
    assert all(not c.eligible and c.rank_key is None for c in decision.considered)


def test_no_candidates_at_all() -> None:
    decision = route(query("T1", "consultation", subspecialty="neuro"), ())
    assert decision.center_code is None
    assert decision.reason == (
        "no center serves consultation (neuro) for this institution (T1) under an agreement in force; "
        "no candidate centers"
    )


def test_escalation_picks_a_strictly_higher_tier() -> None:
    escalate = query("T1", "imaging", "DX", above_tier=Tier.COUNTY, exclude=frozenset({"K1-IMG"}))
    decision = route(escalate)
    assert decision.center_code == "CITY-IMG"
    assert reason_of(decision, "K1-IMG") == "excluded from this route; tier county is not above county"
    assert reason_of(decision, "K2-IMG") == "no agreement in force; tier county is not above county"
    assert route(query("T1", "imaging", "DX", above_tier=Tier.CITY)).center_code == "PROV-IMG"
    decision = route(query("T1", "imaging", "DX", above_tier=Tier.PROVINCE))
    assert decision.center_code is None
    assert decision.reason.startswith("no center reads DX above tier province for this institution (T1)")


def test_excluded_center_is_not_chosen_again() -> None:
    again = query("T1", "imaging", "DX", exclude=frozenset({"K1-IMG", "CITY-IMG"}))
    assert route(again).center_code == "PROV-IMG"


STROKE_RULE = RouteRule(
    "imaging",
    "CITY-STROKE",
    modality="CT",
    body_part="HEAD",
    priority="stat",
    reason="STAT head CT to stroke center",
)


def test_an_explicit_rule_wins() -> None:
    stat_head_ct = query("T1", "imaging", "CT", body_part="HEAD", priority="stat")
    assert route(stat_head_ct).center_code == "K1-IMG"
    decision = route(stat_head_ct, rules=(STROKE_RULE,))
    assert decision.center_code == "CITY-STROKE"
    assert decision.reason == "chosen by rule: STAT head CT to stroke center"
    assert reason_of(decision, "K1-IMG").startswith("eligible, ranked 1:")


@pytest.mark.parametrize(
    "changes",
    [
        {"priority": "routine"},
        {"body_part": "CHEST"},
        {"body_part": None},
        {"modality": "DX"},
        {"kind": "ecg"},
    ],
)
def test_a_rule_needs_every_given_field_to_match(changes: dict[str, Any]) -> None:
    fields: dict[str, Any] = {"modality": "CT", "body_part": "HEAD", "priority": "stat", **changes}
    kind = fields.pop("kind", "imaging")
    assert route(query("T1", kind, **fields), rules=(STROKE_RULE,)).center_code != "CITY-STROKE"


def test_rule_fields_match_ignoring_case() -> None:
    routed = query("T1", "imaging", "ct", body_part="Head", priority="stat")
    assert route(routed, rules=(STROKE_RULE,)).center_code == "CITY-STROKE"


def test_the_first_usable_rule_wins() -> None:
    stat_head_ct = query("T1", "imaging", "CT", body_part="HEAD", priority="stat")
    to_province = RouteRule("imaging", "PROV-IMG", modality="CT", reason="all CT to the province")
    assert route(stat_head_ct, rules=(to_province, STROKE_RULE)).center_code == "PROV-IMG"
    assert route(stat_head_ct, rules=(STROKE_RULE, to_province)).center_code == "CITY-STROKE"


def test_a_rule_to_an_unusable_center_is_skipped_and_said_so() -> None:
    stat_head_ct = query("T1", "imaging", "CT", body_part="HEAD", priority="stat")
    network = swap(NETWORK, "CITY-STROKE", agreement_in_force=False)
    decision = route(stat_head_ct, network, rules=(STROKE_RULE,))
    assert decision.center_code == "K1-IMG"
    assert reason_of(decision, "CITY-STROKE") == (
        "no agreement in force (rule 'STAT head CT to stroke center' to CITY-STROKE skipped: no agreement in force)"
    )
    network = swap(NETWORK, "CITY-STROKE", opening_hours=OFFICE)
    decision = route(stat_head_ct, network, rules=(STROKE_RULE,), now=SAT_10)
    assert decision.center_code == "K1-IMG"
    assert decision.reason.endswith("(rule 'STAT head CT to stroke center' to CITY-STROKE skipped: closed now)")
    missing = tuple(c for c in NETWORK if c.code != "CITY-STROKE")
    decision = route(stat_head_ct, missing, rules=(STROKE_RULE,))
    assert decision.center_code == "K1-IMG"
    assert "skipped: not a candidate for this requester" in decision.reason


def test_subspecialty_match_ranks_after_distance_and_room_but_before_load() -> None:
    neuro = query("T1", "consultation", subspecialty="neuro")
    decision = route(neuro)
    # Nearest first: the city comes before the province even without the sub-specialty.
    assert decision.center_code == "CITY-CONS"
    assert decision.reason == "chosen: ancestor at tier city, does not cover neuro, open, load 3/20"
    assert "covers neuro" in reason_of(decision, "PROV-CONS")
    full_neuro = (
        *NETWORK,
        center("CITY-NEURO", "CITY", "consultation", subspecialties=frozenset({"neuro"}), load=20),
    )
    # A full center loses to one with room at the same tier, even one without the sub-specialty.
    assert route(neuro, full_neuro).center_code == "CITY-CONS"
    busy_neuro = (
        *NETWORK,
        center("CITY-NEURO", "CITY", "consultation", subspecialties=frozenset({"neuro"}), load=15),
    )
    decision = route(neuro, busy_neuro)
    assert decision.center_code == "CITY-NEURO"
    assert decision.reason == "chosen: ancestor at tier city, covers neuro, open, load 15/20"


def test_consultation_has_no_modality_check() -> None:
    assert route(query("T1", "consultation", "CT")).center_code == "CITY-CONS"


def test_centers_below_the_requester_come_last() -> None:
    network = (
        center("CITY-IMG", "CITY", "imaging", "DX", load=20, capacity=20),
        center("T1-IMG", "T1", "imaging", "DX", load=0),
        center("PROV-IMG", "PROV", "imaging", "DX", load=20, capacity=20),
    )
    decision = route(query("K1", "imaging", "DX"), network, chain_agreements=False)
    assert decision.center_code == "CITY-IMG"
    assert reason_of(decision, "T1-IMG").startswith("eligible, ranked 3: not an ancestor, tier township")


def test_duplicate_candidates_and_naive_now_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        choose_center(query("T1", "imaging", "DX"), (*NETWORK, NETWORK[0]), [], WED_10)
    with pytest.raises(ValueError, match="timezone-aware"):
        choose_center(query("T1", "imaging", "DX"), NETWORK, [], datetime(2024, 3, 6, 10))


# --------------------------------------------------------------------------- properties

REQUESTERS = ["T1", "T2", "V1", "K1", "K2", "CITY"]
INSTITUTIONS = list(PATHS)
CODES = [f"C{i:02d}" for i in range(12)]
HOURS: list[tuple[OpeningWindow, ...] | None] = [None, OFFICE, NIGHT_FRI, WEEKDAYS]


@st.composite
def candidates(draw: st.DrawFn) -> tuple[CenterCandidate, ...]:
    codes = draw(st.lists(st.sampled_from(CODES), unique=True, max_size=8))
    return tuple(
        center(
            code,
            draw(st.sampled_from(INSTITUTIONS)),
            draw(st.sampled_from(["imaging", "ecg", "consultation"])),
            " ".join(draw(st.sets(st.sampled_from(["DX", "CT", "MR", "ECG"])))),
            subspecialties=draw(st.frozensets(st.sampled_from(["neuro", "chest", "cardiology"]))),
            opening_hours=draw(st.sampled_from(HOURS)),
            capacity=draw(st.integers(min_value=1, max_value=20)),
            load=draw(st.integers(min_value=0, max_value=25)),
            agreement_in_force=draw(st.booleans()),
        )
        for code in codes
    )


@st.composite
def queries(draw: st.DrawFn) -> RouteQuery:
    kind = draw(st.sampled_from(["imaging", "ecg", "consultation"]))
    return query(
        draw(st.sampled_from(REQUESTERS)),
        kind,
        draw(st.sampled_from([None, "DX", "CT", "MR", "ECG"])),
        body_part=draw(st.sampled_from([None, "HEAD", "CHEST"])),
        subspecialty=draw(st.sampled_from([None, "neuro", "chest"])),
        priority=draw(st.sampled_from(["stat", "urgent", "routine"])),
        above_tier=draw(st.sampled_from([None, *Tier])),
        exclude=draw(st.frozensets(st.sampled_from(CODES), max_size=3)),
    )


rules_strategy = st.lists(
    st.builds(
        RouteRule,
        st.sampled_from(["imaging", "ecg", "consultation"]),
        st.sampled_from(CODES),
        modality=st.sampled_from([None, "DX", "CT"]),
        body_part=st.sampled_from([None, "HEAD"]),
        priority=st.sampled_from([None, "stat"]),
        reason=st.just("network rule"),
    ),
    max_size=3,
)


def eligible_by_hand(q: RouteQuery, c: CenterCandidate) -> bool:
    """The eligibility rules of the brief, written again independently of the module."""
    if c.service != q.kind or not c.agreement_in_force or c.code in q.exclude:
        return False
    if q.kind != "consultation" and q.modality is not None and q.modality not in c.modalities:
        return False
    return q.above_tier is None or c.tier.rank < q.above_tier.rank


def order_by_hand(q: RouteQuery, c: CenterCandidate, now: datetime) -> tuple[Any, ...]:
    steps = q.requester_tier.rank - c.tier.rank
    return (
        not is_open(c.opening_hours, now),
        steps < 0,
        abs(steps),
        c.load >= c.capacity,  # at the same distance a center with room first, ancestor or not
        not is_within(q.requester_path, c.institution_path),
        q.subspecialty is not None and q.subspecialty not in c.subspecialties,
        c.load / c.capacity,
        c.code,
    )


@settings(max_examples=300)
@given(queries(), candidates(), rules_strategy, instants)
def test_never_an_ineligible_center_and_open_whenever_possible(
    q: RouteQuery, centers: tuple[CenterCandidate, ...], rules: list[RouteRule], now: datetime
) -> None:
    decision = choose_center(q, centers, rules, now)
    eligible = [c for c in centers if eligible_by_hand(q, c)]
    assert [c.center_code for c in decision.considered] == [c.code for c in centers]
    assert [c.eligible for c in decision.considered] == [eligible_by_hand(q, c) for c in centers]
    if not eligible:
        assert decision.center_code is None
        assert decision.reason.startswith("no center")
        return
    chosen = next(c for c in centers if c.code == decision.center_code)
    assert eligible_by_hand(q, chosen)
    if any(is_open(c.opening_hours, now) for c in eligible):
        assert is_open(chosen.opening_hours, now)
    if not rules:
        assert order_by_hand(q, chosen, now) == min(order_by_hand(q, c, now) for c in eligible)


@given(queries(), candidates(), instants)
def test_the_decision_does_not_depend_on_candidate_order(
    q: RouteQuery, centers: tuple[CenterCandidate, ...], now: datetime
) -> None:
    forward = choose_center(q, centers, [], now)
    backward = choose_center(q, tuple(reversed(centers)), [], now)
    assert forward.center_code == backward.center_code
    assert forward.reason == backward.reason
