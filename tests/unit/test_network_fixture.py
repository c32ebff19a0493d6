"""The network file schema and the demo five-tier network (fixtures/network-demo.json)."""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from telenet.domain.tiers import Tier

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = ROOT / "schemas" / "network.schema.json"
FIXTURE_PATH = ROOT / "fixtures" / "network-demo.json"

NO_ECG_COUNTY = "NL-C02-K02"
NO_AGREEMENT_TOWNSHIP = "NL-C02-K01-T03"


def _load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return _load(SCHEMA_PATH)


@pytest.fixture(scope="module")
def validator(schema: dict[str, Any]) -> Draft202012Validator:
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


@pytest.fixture(scope="module")
def demo() -> dict[str, Any]:
    return _load(FIXTURE_PATH)


def _errors(validator: Draft202012Validator, document: Any) -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(document)]


# --- the schema itself -------------------------------------------------------------------------


def test_schema_is_a_valid_draft_2020_12_schema(schema: dict[str, Any]) -> None:
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "https://telenet.example/schemas/network.schema.json"
    assert schema["title"]


def _subschemas(node: Any, path: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _subschemas(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _subschemas(value, f"{path}/{i}")


def test_every_object_is_closed_and_every_property_described(schema: dict[str, Any]) -> None:
    checked = 0
    for path, node in _subschemas(schema):
        # if/then/else branches only narrow properties declared (and described) next to them.
        if any(f"/{branch}" in path for branch in ("if", "then", "else")):
            continue
        if node.get("type") == "object":
            assert node.get("additionalProperties") is False, f"{path} is not closed"
        for name, prop in node.get("properties", {}).items():
            assert prop.get("description"), f"{path}/properties/{name} has no description"
            checked += 1
    assert checked > 50


# --- the demo fixture ----------------------------------------------------------------------------


def test_demo_fixture_is_valid(validator: Draft202012Validator, demo: dict[str, Any]) -> None:
    assert _errors(validator, demo) == []
    assert demo["format"] == "telenet-network/1"
    assert "fictional" in demo["description"].lower()


def test_institution_counts_per_tier(demo: dict[str, Any]) -> None:
    counts = Counter(i["tier"] for i in demo["institutions"])
    assert counts == {"province": 1, "city": 2, "county": 4, "township": 12, "village": 24}


def test_codes_ae_titles_and_hl7_ports_are_unique(demo: dict[str, Any]) -> None:
    institutions = demo["institutions"]
    codes = [i["code"] for i in institutions]
    assert len(codes) == len(set(codes))
    ae_titles = [ae for i in institutions for ae in i["ae_titles"]]
    assert len(ae_titles) == len(set(ae_titles)) == len(institutions)
    assert all(i["hl7_facility"] == i["code"] for i in institutions)
    destinations = {i["code"]: i["hl7_destination"] for i in institutions if i["hl7_destination"]}
    assert {code for code in destinations} == {i["code"] for i in institutions if i["tier"] in ("county", "township")}
    ports = [d["port"] for d in destinations.values()]
    assert len(ports) == len(set(ports)) == 16
    assert min(ports) == 12601
    center_codes = [c["code"] for c in demo["centers"]]
    assert len(center_codes) == len(set(center_codes))


def test_every_parent_exists_and_is_one_tier_up(demo: dict[str, Any]) -> None:
    by_code = {i["code"]: i for i in demo["institutions"]}
    for inst in demo["institutions"]:
        tier = Tier(inst["tier"])
        if tier is Tier.PROVINCE:
            assert inst["parent"] is None
            continue
        parent = by_code[inst["parent"]]
        assert Tier(parent["tier"]).rank == tier.rank - 1, inst["code"]
        if parent["tier"] != Tier.PROVINCE:  # codes below a city extend their parent's code
            assert inst["code"].startswith(parent["code"] + "-"), inst["code"]


def test_county_centers(demo: dict[str, Any]) -> None:
    counties = [i["code"] for i in demo["institutions"] if i["tier"] == "county"]
    services: dict[str, set[str]] = {code: set() for code in counties}
    for center in demo["centers"]:
        if center["institution"] in services:
            services[center["institution"]].add(center["service"])
    for county in counties:
        expected = {"imaging"} if county == NO_ECG_COUNTY else {"imaging", "ecg"}
        assert services[county] == expected, county
    # ... and the county without an ECG center has one in its city to route to.
    assert any(c["institution"] == "NL-C02" and c["service"] == "ecg" for c in demo["centers"])


def test_center_references_and_pacs_node(demo: dict[str, Any]) -> None:
    codes = {i["code"] for i in demo["institutions"]}
    assert all(c["institution"] in codes for c in demo["centers"])
    nodes = {c["code"]: c["dicom_node"] for c in demo["centers"] if c["dicom_node"]}
    assert nodes == {"NL-C01-K01-IMG": {"ae_title": "K01PACS", "host": "127.0.0.1", "port": 4242}}


def test_networks_and_agreements(demo: dict[str, Any]) -> None:
    codes = {i["code"] for i in demo["institutions"]}
    centers = {c["code"] for c in demo["centers"]}
    for network in demo["networks"]:
        assert network["lead"] in codes
        assert network["lead"] not in network["members"]
        assert set(network["members"]) <= codes
        assert [a["member"] for a in network["agreements"]] == network["members"]
        for agreement in network["agreements"]:
            assert agreement["valid_from"] <= agreement["valid_to"]
        for rule in network.get("rules", []):
            assert rule["center"] in centers
    # The township left out on purpose is in no network at all, nor are its villages.
    for network in demo["networks"]:
        involved = [network["lead"], *network["members"]]
        assert not any(code.startswith(NO_AGREEMENT_TOWNSHIP) for code in involved), network["code"]


def test_users_cover_every_role_and_reference_the_registry(demo: dict[str, Any]) -> None:
    codes = {i["code"] for i in demo["institutions"]}
    centers = {c["code"]: c for c in demo["centers"]}
    users = {u["username"]: u for u in demo["users"]}
    assert {u["role"] for u in users.values()} == {
        "requester",
        "reader",
        "coordinator",
        "admin",
        "integration",
    }
    for user in users.values():
        assert "password" not in user
        assert user["institution"] in codes
        for center in user["centers"]:
            assert centers[center]["institution"] == user["institution"], user["username"]
    assert users["township_doc2"]["institution"] == NO_AGREEMENT_TOWNSHIP
    assert users["township_doc3"]["institution"].startswith(NO_ECG_COUNTY + "-")
    assert users["junior_reader"]["practice_since"] == "2024-08-01"


# --- the schema rejects broken variants ---------------------------------------------------------


def _drop_format(d: dict[str, Any]) -> None:
    del d["format"]


def _wrong_format(d: dict[str, Any]) -> None:
    d["format"] = "telenet-network/2"


def _bad_tier(d: dict[str, Any]) -> None:
    d["institutions"][1]["tier"] = "district"


def _lowercase_ae_title(d: dict[str, Any]) -> None:
    d["institutions"][0]["ae_titles"] = ["nlprov"]


def _long_ae_title(d: dict[str, Any]) -> None:
    d["institutions"][0]["ae_titles"] = ["A" * 17]


def _ae_title_leading_space(d: dict[str, Any]) -> None:
    d["institutions"][0]["ae_titles"] = [" NLPROV"]


def _duplicate_ae_title(d: dict[str, Any]) -> None:
    d["institutions"][0]["ae_titles"] = ["NLPROV", "NLPROV"]


def _extra_institution_property(d: dict[str, Any]) -> None:
    d["institutions"][0]["beds"] = 2000


def _extra_top_level_property(d: dict[str, Any]) -> None:
    d["comment"] = "x"


def _share_too_big(d: dict[str, Any]) -> None:
    d["networks"][0]["agreements"][0]["invited_share_bp"] = 10001


def _share_negative(d: dict[str, Any]) -> None:
    d["networks"][0]["agreements"][0]["invited_share_bp"] = -1


def _missing_parent(d: dict[str, Any]) -> None:
    del d["institutions"][1]["parent"]


def _null_parent_below_province(d: dict[str, Any]) -> None:
    d["institutions"][1]["parent"] = None


def _bad_code(d: dict[str, Any]) -> None:
    d["institutions"][0]["code"] = "nl-prov"


def _impossible_date(d: dict[str, Any]) -> None:
    d["networks"][0]["agreements"][0]["valid_to"] = "2028-02-30"


def _empty_services(d: dict[str, Any]) -> None:
    d["networks"][0]["agreements"][0]["services"] = []


def _duplicate_services(d: dict[str, Any]) -> None:
    d["networks"][0]["agreements"][0]["services"] = ["imaging", "imaging"]


def _imaging_center_without_modalities(d: dict[str, Any]) -> None:
    next(c for c in d["centers"] if c["service"] == "imaging")["modalities"] = []


def _zero_sla(d: dict[str, Any]) -> None:
    d["centers"][0]["sla_minutes"]["stat"] = 0


def _bad_opening_days(d: dict[str, Any]) -> None:
    next(c for c in d["centers"] if c["opening_hours"])["opening_hours"][0]["days"] = "weekdays"


def _bad_opening_time(d: dict[str, Any]) -> None:
    next(c for c in d["centers"] if c["opening_hours"])["opening_hours"][0]["from"] = "8:00"


def _zero_capacity(d: dict[str, Any]) -> None:
    d["centers"][0]["capacity"] = 0


def _port_out_of_range(d: dict[str, Any]) -> None:
    next(c for c in d["centers"] if c["dicom_node"])["dicom_node"]["port"] = 65536


def _negative_price(d: dict[str, Any]) -> None:
    d["fee_schedule"][0]["price_fen"] = -100


def _price_in_yuan(d: dict[str, Any]) -> None:
    d["fee_schedule"][0]["price_fen"] = 30.5


def _user_with_password(d: dict[str, Any]) -> None:
    d["users"][0]["password"] = "secret"


def _bad_username(d: dict[str, Any]) -> None:
    d["users"][0]["username"] = "Township Doc"


def _bad_role(d: dict[str, Any]) -> None:
    d["users"][0]["role"] = "superuser"


def _bad_recognition_key(d: dict[str, Any]) -> None:
    d["networks"][0]["recognition_validity_days"] = {"imaging-DX": 30}


def _bad_rule_priority(d: dict[str, Any]) -> None:
    next(n for n in d["networks"] if n.get("rules"))["rules"][0]["priority"] = "asap"


BROKEN: dict[str, Callable[[dict[str, Any]], None]] = {
    f.__name__.lstrip("_"): f
    for f in (
        _drop_format,
        _wrong_format,
        _bad_tier,
        _lowercase_ae_title,
        _long_ae_title,
        _ae_title_leading_space,
        _duplicate_ae_title,
        _extra_institution_property,
        _extra_top_level_property,
        _share_too_big,
        _share_negative,
        _missing_parent,
        _null_parent_below_province,
        _bad_code,
        _impossible_date,
        _empty_services,
        _duplicate_services,
        _imaging_center_without_modalities,
        _zero_sla,
        _bad_opening_days,
        _bad_opening_time,
        _zero_capacity,
        _port_out_of_range,
        _negative_price,
        _price_in_yuan,
        _user_with_password,
        _bad_username,
        _bad_role,
        _bad_recognition_key,
        _bad_rule_priority,
    )
}


@pytest.mark.parametrize("mutation", list(BROKEN), ids=list(BROKEN))
def test_schema_rejects_broken_variant(validator: Draft202012Validator, demo: dict[str, Any], mutation: str) -> None:
    broken = copy.deepcopy(demo)
    BROKEN[mutation](broken)
    assert _errors(validator, broken), f"{mutation} was accepted"


def _minimal_optional_fields(d: dict[str, Any]) -> None:
    for key in ("networks", "centers", "fee_schedule", "users", "description"):
        del d[key]
    for inst in d["institutions"]:
        for key in ("ae_titles", "hl7_facility", "hl7_destination"):
            del inst[key]
    del d["institutions"][0]["parent"]


def _recognition_overrides(d: dict[str, Any]) -> None:
    d["networks"][0]["recognition_validity_days"] = {"imaging:DX": 30, "ecg:ECG": 7}


def _ae_title_with_inner_space(d: dict[str, Any]) -> None:
    d["institutions"][0]["ae_titles"] = ["NL PROV", "A" * 16]


def _consultation_open_daily(d: dict[str, Any]) -> None:
    center = next(c for c in d["centers"] if c["opening_hours"])
    center["opening_hours"] = [{"days": "mon,wed,fri-sun", "from": "00:00", "to": "24:00"}]


ACCEPTED: dict[str, Callable[[dict[str, Any]], None]] = {
    f.__name__.lstrip("_"): f
    for f in (
        _minimal_optional_fields,
        _recognition_overrides,
        _ae_title_with_inner_space,
        _consultation_open_daily,
    )
}


@pytest.mark.parametrize("mutation", list(ACCEPTED), ids=list(ACCEPTED))
def test_schema_accepts_valid_variant(validator: Draft202012Validator, demo: dict[str, Any], mutation: str) -> None:
    variant = copy.deepcopy(demo)
    ACCEPTED[mutation](variant)
    assert _errors(validator, variant) == []
