"""Cross-reference rules of a network document that a JSON Schema cannot express.

The loader first validates the file against ``schemas/network.schema.json``, then runs
:func:`check_network` and refuses the whole file when either reports anything.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from telenet.domain.tiers import Tier, child_path


@dataclass(frozen=True)
class LocatedError:
    """An error and where it is in the file, as a JSON pointer (``/institutions/3/parent``)."""

    location: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"location": self.location, "message": self.message}


def _duplicates(items: Sequence[Mapping[str, Any]], key: str, section: str) -> list[LocatedError]:
    counts = Counter(str(item.get(key)) for item in items)
    return [
        LocatedError(f"/{section}/{i}/{key}", f"{key} {item.get(key)!r} appears {counts[str(item.get(key))]} times")
        for i, item in enumerate(items)
        if counts[str(item.get(key))] > 1
    ]


def check_network(doc: Mapping[str, Any], existing_tiers: Mapping[str, str] | None = None) -> list[LocatedError]:
    """Every cross-reference error of a schema-valid network document.

    ``existing_tiers`` maps institution codes already in the database to their tier, so a file may
    refer to institutions loaded earlier (a county's file naming the province as parent).
    """
    errors: list[LocatedError] = []
    institutions: list[Mapping[str, Any]] = list(doc.get("institutions", []))
    centers: list[Mapping[str, Any]] = list(doc.get("centers", []))
    networks: list[Mapping[str, Any]] = list(doc.get("networks", []))
    users: list[Mapping[str, Any]] = list(doc.get("users", []))

    errors += _duplicates(institutions, "code", "institutions")
    errors += _duplicates(centers, "code", "centers")
    errors += _duplicates(networks, "code", "networks")
    errors += _duplicates(users, "username", "users")

    tiers: dict[str, Tier] = {code: Tier(t) for code, t in (existing_tiers or {}).items()}
    tiers.update({str(i["code"]): Tier(i["tier"]) for i in institutions})

    ae_seen: dict[str, str] = {}
    facility_seen: dict[str, str] = {}
    for idx, inst in enumerate(institutions):
        where = f"/institutions/{idx}"
        tier = Tier(inst["tier"])
        parent = inst.get("parent")
        if parent is None:
            if tier is not Tier.PROVINCE:
                errors.append(LocatedError(f"{where}/parent", f"a {tier} institution needs a parent"))
        elif parent not in tiers:
            errors.append(LocatedError(f"{where}/parent", f"parent {parent!r} is not a known institution"))
        elif not tiers[parent].is_above(tier):
            errors.append(
                LocatedError(
                    f"{where}/parent",
                    f"parent {parent!r} is {tiers[parent]}, not a higher tier than {tier}",
                )
            )
        for j, ae in enumerate(inst.get("ae_titles", [])):
            if ae in ae_seen:
                errors.append(
                    LocatedError(f"{where}/ae_titles/{j}", f"AE title {ae!r} already belongs to {ae_seen[ae]}")
                )
            ae_seen[ae] = str(inst["code"])
        own = set(inst.get("ae_titles", []))
        for j, entry in enumerate(inst.get("ae_charsets") or []):
            if entry["ae_title"] not in own:
                errors.append(
                    LocatedError(
                        f"{where}/ae_charsets/{j}/ae_title",
                        f"AE title {entry['ae_title']!r} is not one of its ae_titles",
                    )
                )
        facility = inst.get("hl7_facility")
        if facility:
            if facility in facility_seen:
                errors.append(
                    LocatedError(
                        f"{where}/hl7_facility",
                        f"HL7 facility {facility!r} already belongs to {facility_seen[facility]}",
                    )
                )
            facility_seen[facility] = str(inst["code"])

    errors += _check_cycles(institutions)

    center_codes = {str(c["code"]) for c in centers}
    for idx, center in enumerate(centers):
        if center["institution"] not in tiers:
            errors.append(
                LocatedError(f"/centers/{idx}/institution", f"institution {center['institution']!r} does not exist")
            )

    for n_idx, net in enumerate(networks):
        where = f"/networks/{n_idx}"
        if net["lead"] not in tiers:
            errors.append(LocatedError(f"{where}/lead", f"lead {net['lead']!r} is not a known institution"))
        members = list(net.get("members", []))
        for m_idx, member in enumerate(members):
            if member not in tiers:
                errors.append(LocatedError(f"{where}/members/{m_idx}", f"member {member!r} is not a known institution"))
            elif member == net["lead"]:
                errors.append(LocatedError(f"{where}/members/{m_idx}", "the lead cannot also be a member"))
        seen_members: set[str] = set()
        for a_idx, agreement in enumerate(net.get("agreements", [])):
            a_where = f"{where}/agreements/{a_idx}"
            member = agreement["member"]
            if member not in members:
                errors.append(LocatedError(f"{a_where}/member", f"{member!r} is not a member of network {net['code']}"))
            if member in seen_members:
                errors.append(LocatedError(f"{a_where}/member", f"a second agreement for {member!r}"))
            seen_members.add(member)
            errors += check_agreement(agreement, a_where)
        for r_idx, rule in enumerate(net.get("rules", [])):
            if rule["center"] not in center_codes:
                errors.append(
                    LocatedError(
                        f"{where}/rules/{r_idx}/center",
                        f"center {rule['center']!r} is not defined in this file",
                    )
                )

    for u_idx, user in enumerate(users):
        where = f"/users/{u_idx}"
        if user["institution"] not in tiers:
            errors.append(LocatedError(f"{where}/institution", f"institution {user['institution']!r} does not exist"))
        for c_idx, code in enumerate(user.get("centers", [])):
            if code not in center_codes:
                errors.append(LocatedError(f"{where}/centers/{c_idx}", f"center {code!r} is not defined in this file"))
        if user.get("centers") and user["role"] not in ("reader", "coordinator"):
            errors.append(LocatedError(f"{where}/centers", "only readers and coordinators are bound to centers"))
    return errors


def check_agreement(agreement: Mapping[str, Any], where: str = "") -> list[LocatedError]:
    """An agreement's dates are ordered and its split is 0..10000 basis points."""
    errors: list[LocatedError] = []
    valid_from = _as_date(agreement.get("valid_from"))
    valid_to = _as_date(agreement.get("valid_to"))
    if valid_from and valid_to and valid_from > valid_to:
        errors.append(LocatedError(f"{where}/valid_to", f"valid_to {valid_to} is before valid_from {valid_from}"))
    bp = agreement.get("invited_share_bp")
    if not isinstance(bp, int) or isinstance(bp, bool) or not 0 <= bp <= 10000:
        errors.append(LocatedError(f"{where}/invited_share_bp", f"split {bp!r} is not 0..10000 basis points"))
    return errors


def agreement_in_force(valid_from: date, valid_to: date, services: Sequence[str], service: str, on: date) -> bool:
    return valid_from <= on <= valid_to and service in services


def _as_date(value: Any) -> date | None:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        return None


def _check_cycles(institutions: Sequence[Mapping[str, Any]]) -> list[LocatedError]:
    parents = {str(i["code"]): i.get("parent") for i in institutions}
    errors = []
    for idx, inst in enumerate(institutions):
        seen = {str(inst["code"])}
        current = inst.get("parent")
        while current in parents:
            if current in seen:
                errors.append(LocatedError(f"/institutions/{idx}/parent", "the parent chain forms a cycle"))
                break
            seen.add(current)
            current = parents[current]
    return errors


def compute_paths(institutions: Sequence[Mapping[str, Any]], known_paths: Mapping[str, str]) -> dict[str, str]:
    """Materialized paths for the institutions of a (checked, acyclic) document, parents first."""
    paths = dict(known_paths)
    pending = {str(i["code"]): i.get("parent") for i in institutions}
    while pending:
        progressed = False
        for code, parent in list(pending.items()):
            if parent is None or parent in paths:
                paths[code] = child_path(paths[parent] if parent else None, code)
                del pending[code]
                progressed = True
        if not progressed:
            raise ValueError(f"unresolvable parents: {sorted(pending)}")
    return paths
