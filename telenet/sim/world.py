"""What the simulator knows of the network: from the network file and the accounts it may use."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Township:
    """An ordering site: its HIS (HL7 facility, result destination), its modality (AE title) and its people."""

    code: str
    name: str
    ae_title: str
    facility: str
    hl7_port: int | None
    requester: str | None
    integration: str | None


@dataclass
class World:
    townships: list[Township]
    readers: dict[str, str]  # center code -> a reader account of that center
    passwords: dict[str, str]
    center_tiers: dict[str, str] = field(default_factory=dict)

    def password(self, username: str) -> str:
        return self.passwords[username]


def read_accounts(path: Path) -> dict[str, str]:
    """``username password ...`` per line (the format of var/demo-accounts.txt); other columns are ignored."""
    accounts = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 2 and not line.startswith("#"):
            accounts[parts[0]] = parts[1]
    return accounts


def build_world(doc: dict[str, Any], passwords: dict[str, str]) -> World:
    """Townships that can order over HL7 (an integration account with a password and an AE title) and, per
    center, a reader who may sign (three years of practice are checked by the hub, not here)."""
    users = [u for u in doc.get("users", []) if u["username"] in passwords]
    by_institution: dict[str, dict[str, str]] = {}
    for user in users:
        by_institution.setdefault(user["institution"], {}).setdefault(user["role"], user["username"])
    readers: dict[str, str] = {}
    for user in sorted(users, key=lambda u: u.get("practice_since") or "9999"):
        if user["role"] == "reader":
            for center in user.get("centers", []):
                readers.setdefault(center, user["username"])
    townships = []
    for inst in doc["institutions"]:
        if inst["tier"] != "township" or not inst.get("ae_titles"):
            continue
        people = by_institution.get(inst["code"], {})
        if "integration" not in people:
            continue
        destination = inst.get("hl7_destination") or {}
        townships.append(
            Township(
                code=inst["code"],
                name=inst["name"],
                ae_title=inst["ae_titles"][0],
                facility=inst.get("hl7_facility") or inst["code"],
                hl7_port=destination.get("port"),
                requester=people.get("requester"),
                integration=people["integration"],
            )
        )
    tiers = {i["code"]: i["tier"] for i in doc["institutions"]}
    center_tiers = {c["code"]: tiers.get(c["institution"], "") for c in doc.get("centers", [])}
    return World(townships=townships, readers=readers, passwords=passwords, center_tiers=center_tiers)


def load_world(network_file: Path, accounts_file: Path) -> World:
    doc = json.loads(network_file.read_text(encoding="utf-8"))
    return build_world(doc, read_accounts(accounts_file))
