"""Pure registry rules: tier order, materialized paths, agreement checks, cross-references of a file."""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telenet.domain.access import Actor, Role, may_sign_final, years_of_practice
from telenet.domain.registry import check_agreement, check_network, compute_paths
from telenet.domain.tiers import Tier, child_path, is_within, path_codes


def test_tier_order() -> None:
    assert [t.value for t in sorted(Tier, key=lambda t: t.rank)] == [
        "province",
        "city",
        "county",
        "township",
        "village",
    ]
    assert Tier.PROVINCE.is_above(Tier.CITY) and Tier.COUNTY.is_above(Tier.VILLAGE)
    assert not Tier.TOWNSHIP.is_above(Tier.TOWNSHIP) and not Tier.VILLAGE.is_above(Tier.COUNTY)
    assert Tier.TOWNSHIP.chinese == "乡"


def test_paths_are_prefix_exact() -> None:
    root = child_path(None, "P")
    city = child_path(root, "C1")
    assert (root, city) == ("/P/", "/P/C1/")
    assert path_codes(city) == ["P", "C1"]
    assert is_within(city, root) and is_within(city, city)
    assert not is_within("/P/C10/", city), "a sibling whose code starts alike is not inside"


@given(st.lists(st.from_regex(r"[A-Z][A-Z0-9]{0,5}", fullmatch=True), min_size=1, max_size=5, unique=True))
def test_compute_paths_follows_parents(codes: list[str]) -> None:
    chain = [{"code": c, "parent": codes[i - 1] if i else None} for i, c in enumerate(codes)]
    paths = compute_paths(list(reversed(chain)), {})
    assert paths[codes[-1]] == "/" + "/".join(codes) + "/"
    for ancestor in codes:
        assert is_within(paths[codes[-1]], paths[ancestor])


@pytest.mark.parametrize(
    ("agreement", "locations"),
    [
        ({"valid_from": "2025-01-01", "valid_to": "2025-12-31", "invited_share_bp": 0}, []),
        ({"valid_from": "2025-01-01", "valid_to": "2025-01-01", "invited_share_bp": 10000}, []),
        ({"valid_from": "2026-01-01", "valid_to": "2025-12-31", "invited_share_bp": 5000}, ["/valid_to"]),
        (
            {"valid_from": "2025-01-01", "valid_to": "2025-12-31", "invited_share_bp": 10001},
            ["/invited_share_bp"],
        ),
        (
            {"valid_from": "2025-01-01", "valid_to": "2025-12-31", "invited_share_bp": -1},
            ["/invited_share_bp"],
        ),
    ],
)
def test_agreement_checks(agreement: dict[str, Any], locations: list[str]) -> None:
    assert [e.location for e in check_agreement(agreement)] == locations


def test_demo_network_has_no_cross_reference_errors(demo_doc: dict[str, Any]) -> None:
    assert check_network(demo_doc) == []


def test_every_cross_reference_error_is_reported_with_its_location(demo_doc: dict[str, Any]) -> None:
    doc = copy.deepcopy(demo_doc)
    doc["institutions"][5]["parent"] = "NL-C01-K01-T01-V01"  # a village as parent of something higher
    doc["institutions"][6]["parent"] = "NOWHERE"
    doc["institutions"][7]["code"] = doc["institutions"][8]["code"]
    doc["centers"][0]["institution"] = "GHOST"
    doc["networks"][0]["agreements"][0]["valid_to"] = "2000-01-01"
    doc["users"][0]["centers"] = ["NL-PROV-IMG"]  # a requester bound to a center
    doc["institutions"][9]["ae_charsets"] = [{"ae_title": "NOT-ITS-AE", "charset": "GBK"}]
    errors = {e.location for e in check_network(doc)}
    assert {
        "/institutions/5/parent",
        "/institutions/6/parent",
        "/institutions/7/code",
        "/institutions/8/code",
        "/centers/0/institution",
        "/networks/0/agreements/0/valid_to",
        "/users/0/centers",
        "/institutions/9/ae_charsets/0/ae_title",
    } <= errors


def test_parent_must_be_a_higher_tier() -> None:
    doc = {
        "institutions": [
            {"code": "P", "tier": "province", "parent": None},
            {"code": "C", "tier": "city", "parent": "P"},
            {"code": "C2", "tier": "city", "parent": "C"},
            {"code": "K", "tier": "county", "parent": None},
        ]
    }
    errors = {e.location: e.message for e in check_network(doc)}
    assert "not a higher tier" in errors["/institutions/2/parent"]
    assert "needs a parent" in errors["/institutions/3/parent"]


def test_parent_cycle_is_reported() -> None:
    doc = {
        "institutions": [
            {"code": "A", "tier": "city", "parent": "B"},
            {"code": "B", "tier": "city", "parent": "A"},
        ]
    }
    assert any("cycle" in e.message for e in check_network(doc))


def _actor(role: Role, path: str = "/P/C/K/", centers: frozenset[str] = frozenset()) -> Actor:
    return Actor(
        user_id=1,
        username="u",
        role=role,
        institution_id=1,
        institution_code="K",
        institution_path=path,
        center_codes=centers,
    )


@pytest.mark.parametrize(
    ("role", "target", "sees"),
    [
        (Role.REQUESTER, "/P/C/K/", True),
        (Role.REQUESTER, "/P/C/K/T/", False),
        (Role.INTEGRATION, "/P/C/K/", True),
        (Role.COORDINATOR, "/P/C/K/T/", True),
        (Role.ADMIN, "/P/C/K/T/V/", True),
        (Role.ADMIN, "/P/C/", False),
        (Role.ADMIN, "/P/C/K2/", False),
        (Role.READER, "/P/C/K/", False),
    ],
)
def test_scope_by_role(role: Role, target: str, sees: bool) -> None:
    assert _actor(role).sees_institution(target) is sees


def test_center_scope() -> None:
    reader = _actor(Role.READER, centers=frozenset({"K-IMG"}))
    assert reader.sees_center("K-IMG", "/P/C/K/") and not reader.sees_center("K-ECG", "/P/C/K/")
    admin = _actor(Role.ADMIN)
    assert admin.sees_center("K-ECG", "/P/C/K/") and not admin.sees_center("C-IMG", "/P/C/")
    assert not _actor(Role.REQUESTER).sees_center("K-IMG", "/P/C/K/")


@pytest.mark.parametrize(
    ("since", "on", "years", "may_sign"),
    [
        (date(2020, 3, 1), date(2023, 2, 28), 2, False),
        (date(2020, 3, 1), date(2023, 3, 1), 3, True),
        (date(2020, 2, 29), date(2023, 2, 28), 2, False),
        (None, date(2023, 1, 1), 0, False),
        (date(2030, 1, 1), date(2023, 1, 1), 0, False),
    ],
)
def test_years_of_practice(since: date | None, on: date, years: int, may_sign: bool) -> None:
    assert years_of_practice(since, on) == years
    actor = Actor(
        user_id=1,
        username="r",
        role=Role.READER,
        institution_id=1,
        institution_code="K",
        institution_path="/K/",
        practice_since=since,
    )
    assert may_sign_final(actor, on) is may_sign
