"""The network generator: schema- and registry-valid, deterministic per seed, the shape asked for."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from telenet.domain.registry import check_network
from telenet.netgen import generate_network
from telenet.schemas import schema_errors

SHAPE = {"cities": 2, "counties_per_city": 3, "townships_per_county": 2, "villages_per_township": 3}


def small(seed: int = 11, **overrides: Any) -> dict[str, Any]:
    return generate_network(**{**SHAPE, **overrides}, seed=seed)


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return small()


def test_valid_against_the_schema_and_the_registry_rules(doc: dict[str, Any]) -> None:
    assert schema_errors("network", doc) == []
    assert check_network(doc) == []


def test_deterministic_per_seed() -> None:
    assert json.dumps(small(5), ensure_ascii=False) == json.dumps(small(5), ensure_ascii=False)
    names = [i["name"] for i in small(5)["institutions"]]
    assert names != [i["name"] for i in small(6)["institutions"]]


@pytest.mark.parametrize(
    "shape",
    [
        {"cities": 2, "counties_per_city": 3, "townships_per_county": 2, "villages_per_township": 3},
        {"cities": 1, "counties_per_city": 1, "townships_per_county": 1, "villages_per_township": 0},
        {"cities": 3, "counties_per_city": 0, "townships_per_county": 5, "villages_per_township": 5},
        {"cities": 1, "counties_per_city": 2, "townships_per_county": 120, "villages_per_township": 1},
    ],
)
def test_counts_per_tier_as_asked(shape: dict[str, int]) -> None:
    doc = generate_network(**shape, seed=3)
    tiers = Counter(i["tier"] for i in doc["institutions"])
    counties = shape["cities"] * shape["counties_per_city"]
    townships = counties * shape["townships_per_county"]
    expected = {
        "province": 1,
        "city": shape["cities"],
        "county": counties,
        "township": townships,
        "village": townships * shape["villages_per_township"],
    }
    assert {t: tiers.get(t, 0) for t in expected} == expected
    assert schema_errors("network", doc) == [] and check_network(doc) == []


def test_codes_ae_titles_facilities_and_names_are_unique(doc: dict[str, Any]) -> None:
    institutions = doc["institutions"]
    for key in ("code", "name", "hl7_facility"):
        values = [i[key] for i in institutions]
        assert len(values) == len(set(values)), key
    ae_titles = [ae for i in institutions for ae in i["ae_titles"]]
    assert len(ae_titles) == len(set(ae_titles)) == len(institutions)
    assert all(len(ae) <= 16 for ae in ae_titles)
    for section, key in (("centers", "code"), ("networks", "code"), ("users", "username")):
        values = [item[key] for item in doc[section]]
        assert len(values) == len(set(values)), section


def test_conventions_of_the_demo(doc: dict[str, Any]) -> None:
    by_code = {i["code"]: i for i in doc["institutions"]}
    township = by_code["GP-C02-K03-T02"]
    assert township["ae_titles"] == ["C02K03T02"] and township["hl7_facility"] == "GP-C02-K03-T02"
    assert township["parent"] == "GP-C02-K03" and township["kind"] == "township_health_center"
    assert township["name"].endswith("卫生院") and township["name"].startswith(by_code["GP-C02-K03"]["name"][:3])
    assert by_code["GP-PROV"]["ae_titles"] == ["GPPROV"] and by_code["GP-PROV"]["parent"] is None
    village = by_code["GP-C02-K03-T02-V03"]
    assert village["name"].endswith("村卫生室") and village["grade"] == "unrated"
    assert by_code["GP-C01-K01"]["name"].endswith("县人民医院")


def test_province_scale_codes_fit() -> None:
    doc = generate_network(
        cities=1, counties_per_city=1, townships_per_county=1, villages_per_township=999, seed=1, prefix="ABCD"
    )
    last = doc["institutions"][-1]
    assert last["code"] == "ABCD-C01-K01-T01-V999" and last["ae_titles"] == ["C01K01T01V999"]
    assert doc["institutions"][0]["ae_titles"] == ["ABCDPROV"]
    assert schema_errors("network", doc) == []


def test_centers_in_every_county_and_city(doc: dict[str, Any]) -> None:
    services: dict[str, set[str]] = {}
    for center in doc["centers"]:
        services.setdefault(center["institution"], set()).add(center["service"])
        assert center["sla_minutes"]["stat"] <= center["sla_minutes"]["routine"]
        assert "sla.py" in center["note"]
    tier = {i["code"]: i["tier"] for i in doc["institutions"]}
    for code, t in tier.items():
        want = {
            "province": {"imaging", "ecg", "consultation"},
            "city": {"imaging", "ecg", "consultation"},
            "county": {"imaging", "ecg"},
        }.get(t, set())
        assert services.get(code, set()) == want, code


def test_agreements_cover_every_member(doc: dict[str, Any]) -> None:
    nets = {n["code"]: n for n in doc["networks"]}
    everyone = {i["code"] for i in doc["institutions"]} - {"GP-PROV"}
    province = nets["NET-GP-PROV"]
    assert set(province["members"]) == everyone
    assert len(nets) == 1 + SHAPE["cities"] + SHAPE["cities"] * SHAPE["counties_per_city"]
    city = nets["NET-GP-C02"]
    assert set(city["members"]) == {c for c in everyone if c.startswith("GP-C02-")}
    assert city["name"].endswith("市医疗联合体") and city["rules"][0]["center"] == "GP-C02-IMG"
    county = nets["NET-GP-C01-K02"]
    assert set(county["members"]) == {c for c in everyone if c.startswith("GP-C01-K02-")}
    assert county["name"].endswith("县县域医共体")
    for net in nets.values():
        assert [a["member"] for a in net["agreements"]] == net["members"]
    assert {tuple(a["services"]) for a in county["agreements"]} == {("imaging", "ecg")}


def test_accounts(doc: dict[str, Any]) -> None:
    users = doc["users"]
    roles = Counter(u["role"] for u in users)
    townships = [i["code"] for i in doc["institutions"] if i["tier"] == "township"]
    for code in townships:
        mine = {u["role"] for u in users if u["institution"] == code}
        assert mine == {"requester", "integration"}, code
    for center in doc["centers"]:
        bound = {u["role"] for u in users if center["code"] in u["centers"]}
        assert {"reader", "coordinator"} <= bound, center["code"]
    admins = {u["institution"] for u in users if u["role"] == "admin"}
    assert admins == {i["code"] for i in doc["institutions"] if i["tier"] in ("province", "city", "county")}
    assert roles["reader"] == len(doc["centers"])
    readers = [u for u in users if u["role"] == "reader"]
    assert all(u["practice_since"] < "2023-01-01" for u in readers), "every generated reader may sign"
    assert all("password" not in json.dumps(u) for u in users)


def test_fee_schedule_is_the_demos_and_says_illustrative(doc: dict[str, Any], demo_doc: dict[str, Any]) -> None:
    def key(f: dict[str, Any]) -> tuple[Any, ...]:
        return (f["service"], f["modality"], f["priority"], f["subspecialty"], f["price_fen"], f["effective_from"])

    assert sorted(map(key, doc["fee_schedule"]), key=str) == sorted(map(key, demo_doc["fee_schedule"]), key=str)
    assert all("illustrative" in f["source"] for f in doc["fee_schedule"])


def test_hl7_destinations() -> None:
    doc = small(hl7_destination=("127.0.0.1", 13000), hl7_distinct_ports=True)
    pushed = [i for i in doc["institutions"] if i["hl7_destination"]]
    assert {i["tier"] for i in pushed} == {"county", "township"}
    assert [i["hl7_destination"]["port"] for i in pushed] == list(range(13000, 13000 + len(pushed)))
    shared = small(hl7_destination=("hub-sim", 2576))
    assert {i["hl7_destination"]["port"] for i in shared["institutions"] if i["hl7_destination"]} == {2576}


@pytest.mark.parametrize(
    "bad", [{"cities": -1}, {"villages_per_township": 1000}, {"prefix": "gp"}, {"prefix": "TOOLONG"}]
)
def test_bad_parameters_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        small(**bad)


def test_cli_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "net.json"
    args = ["--cities", "1", "--counties-per-city", "2", "--townships-per-county", "2", "--villages-per-township", "1"]
    result = subprocess.run(
        [sys.executable, "-m", "telenet.cli", "network", "generate", *args, "--seed", "4", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "4 township" in result.stdout
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written == generate_network(
        cities=1, counties_per_city=2, townships_per_county=2, villages_per_township=1, seed=4
    )
    bad = subprocess.run(
        [sys.executable, "-m", "telenet.cli", "network", "generate", "--cities", "-3", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "cities" in bad.stderr
