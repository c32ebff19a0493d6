"""``telenet network load``: validate a network file completely, then upsert it in one transaction."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from telenet.domain.access import Actor
from telenet.domain.errors import Invalid
from telenet.domain.registry import LocatedError, check_network, compute_paths
from telenet.domain.tiers import Tier
from telenet.services import practitioners
from telenet.services.fees import local_day
from telenet.services.hub import Hub, use_case
from telenet.services.network_document import network_schema_errors, peer_network_errors
from telenet.services.registry_admin import LoadHistory
from telenet.services.registry_snapshot import bump_version
from telenet.services.registry_state import state_of
from telenet.store.auth_version import mark_revoked
from telenet.store.models import (
    Agreement,
    Center,
    FeeScheduleEntry,
    Institution,
    InstitutionAETitle,
    Network,
    NetworkMember,
    RoutingRule,
    User,
    UserCenter,
)

# Rows per IN (...) list, well under SQLite's and asyncpg's bound-parameter limits.
CHUNK = 500


@dataclass
class LoadReport:
    """What a load changed: ``{"institutions": {"created": n, "updated": n, "unchanged": n}, ...}``."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    users_without_password: list[str] = field(default_factory=list)

    def count(self, section: str, outcome: str) -> None:
        bucket = self.counts.setdefault(section, {"created": 0, "updated": 0, "unchanged": 0})
        bucket[outcome] = bucket.get(outcome, 0) + 1

    @property
    def changed(self) -> int:
        return sum(c["created"] + c["updated"] + c.get("ended", 0) for c in self.counts.values())


def _assign(row: Any, values: Mapping[str, Any]) -> bool:
    """Set the attributes that differ; True when anything changed (so a second load changes nothing)."""
    changed = False
    for key, value in values.items():
        if getattr(row, key) != value:
            setattr(row, key, value)
            changed = True
    return changed


def _d(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


FeeKey = tuple[str, str | None, str | None, str | None, date | None]


def _fee_key(entry: Mapping[str, Any]) -> FeeKey:
    """A fee schedule version is identified by what it prices and the day it takes effect."""
    return (
        entry["service"],
        entry.get("modality"),
        entry.get("priority"),
        entry.get("subspecialty"),
        _d(entry["effective_from"]),
    )


async def _stored_fees(session: AsyncSession) -> dict[FeeKey, FeeScheduleEntry]:
    return {
        (f.service, f.modality, f.priority, f.subspecialty, f.effective_from): f
        for f in (await session.execute(select(FeeScheduleEntry))).scalars()
    }


async def load_network(hub: Hub, doc: Any, actor: Actor | None = None) -> LoadReport:
    """Check ``doc`` against the schema and the registry rules, reporting every error with its location;
    load nothing when anything is wrong; otherwise upsert everything by code."""
    errors = network_schema_errors(doc)
    if not errors:
        errors = peer_network_errors(doc)
    if errors:
        raise Invalid(f"the network file has {len(errors)} error(s)", code="bad-network-file", details=errors)
    async with use_case(hub, actor, "network.load", "network") as uow:
        session = uow.session
        existing = {i.code: i for i in (await session.execute(select(Institution))).scalars()}
        located = check_network(doc, {code: inst.tier for code, inst in existing.items()})
        located += await _check_against_database(session, doc, existing)
        if located:
            raise Invalid(
                f"the network file has {len(located)} error(s)",
                code="bad-network-file",
                details=[e.as_dict() for e in located],
            )
        report = LoadReport()
        history = LoadHistory(hub.clock.now(), actor.username if actor is not None else "network-file")
        institutions = await _load_institutions(hub, session, doc, existing, report, history)
        centers = await _load_centers(session, doc, institutions, report, history)
        await _load_networks(session, doc, institutions, centers, report, local_day(hub.clock.now()), history)
        await _load_fee_schedule(session, doc, report)
        await _load_users(hub, session, doc, institutions, centers, report, history)
        await history.write(session)  # every record the file changed has a new version
        uow.audit(detail={"counts": report.counts})
        await bump_version(session, hub.clock.now())  # every hub process reloads its registry snapshot
        mark_revoked(session)  # accounts' roles and centers may have changed: every process re-reads tokens
    if hub.registry is not None:
        hub.registry.invalidate()
    return report


async def _check_against_database(
    session: AsyncSession, doc: Mapping[str, Any], existing: Mapping[str, Institution]
) -> list[LocatedError]:
    """Rules that involve rows already stored: AE titles owned by another institution, fee versions."""
    errors: list[LocatedError] = []
    owners = {
        ae: inst_id
        for ae, inst_id in (
            await session.execute(select(InstitutionAETitle.ae_title, InstitutionAETitle.institution_id))
        ).all()
    }
    ids = {inst.id: code for code, inst in existing.items()}
    file_codes = {i["code"] for i in doc["institutions"]}
    for idx, inst in enumerate(doc["institutions"]):
        for j, ae in enumerate(inst.get("ae_titles", [])):
            owner = ids.get(owners.get(ae, -1))
            if owner is not None and owner != inst["code"] and owner not in file_codes:
                errors.append(LocatedError(f"/institutions/{idx}/ae_titles/{j}", f"AE title {ae!r} belongs to {owner}"))
    stored = await _stored_fees(session)
    for idx, entry in enumerate(doc.get("fee_schedule", [])):
        key = _fee_key(entry)
        if key in stored and stored[key].price_fen != entry["price_fen"]:
            errors.append(
                LocatedError(
                    f"/fee_schedule/{idx}/price_fen",
                    "fee schedule entries are versioned: add an entry with a later effective_from instead of "
                    f"changing the price in force since {entry['effective_from']}",
                )
            )
    return errors


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def _load_institutions(
    hub: Hub,
    session: AsyncSession,
    doc: Mapping[str, Any],
    existing: dict[str, Institution],
    report: LoadReport,
    history: LoadHistory,
) -> dict[str, int]:
    """Upsert the institutions and their AE titles; returns the id of every institution by code.

    New rows are bulk-inserted one tier at a time (a parent is always a higher tier, so its id is known);
    stored rows are compared and only the differing ones are written."""
    now = hub.clock.now()
    created: list[tuple[Mapping[str, Any], dict[str, Any]]] = []
    for idx, item in enumerate(doc["institutions"]):
        dest = item.get("hl7_destination") or {}
        values = {
            "name": item["name"],
            "tier": item["tier"],
            "kind": item["kind"],
            "grade": item["grade"],
            "qc_failed": bool(item.get("qc_failed", False)),
            "dicom_charset": item.get("dicom_charset"),
            "hl7_charset": item.get("hl7_charset"),
            "hl7_facility": item.get("hl7_facility"),
            "hl7_host": dest.get("host"),
            "hl7_port": dest.get("port"),
            "hl7_order_status": bool(item.get("hl7_order_status", False)),
            "hl7_ack_mode": item.get("hl7_ack_mode", "ack"),
            "peer_cert_sha256": (item.get("peers") or {}).get("cert_sha256"),
            "peer_networks": (item.get("peers") or {}).get("networks"),
        }
        row = existing.get(item["code"])
        before = state_of("institution", row) if row is not None else {}
        if row is None:
            created.append((item, values))
            report.count("institutions", "created")
        elif _assign(row, values):
            row.updated_at = now
            report.count("institutions", "updated")
            history.changed(
                "institution", row.id, row.code, row.id, before, state_of("institution", row), f"/institutions/{idx}"
            )
        else:
            report.count("institutions", "unchanged")
    await session.flush()  # updates first, as the ORM would: a new row may take a value an old one gives up
    code_of = {row.id: code for code, row in existing.items()}
    parents: dict[str, str | None] = {
        code: code_of[row.parent_id] if row.parent_id is not None else None for code, row in existing.items()
    }
    parents.update({i["code"]: i.get("parent") for i in doc["institutions"]})
    paths = compute_paths([{"code": c, "parent": p} for c, p in parents.items()], {})
    ids = {code: row.id for code, row in existing.items()}
    for tier in Tier:
        rows = [
            {
                "code": item["code"],
                "parent_id": ids[item["parent"]] if item.get("parent") else None,
                "path": paths[item["code"]],
                "created_at": now,
                "updated_at": now,
                **values,
            }
            for item, values in created
            if values["tier"] == tier.value
        ]
        if rows:
            # A plain executemany, then one query for the ids: RETURNING in parameter order makes SQLite
            # insert row by row.
            await session.execute(insert(Institution), rows)
            stored = await session.execute(select(Institution.code, Institution.id).where(Institution.tier == tier))
            ids.update({code: inst_id for code, inst_id in stored})
    for code, row in existing.items():
        parent_code = parents[code]
        parent_id = ids[parent_code] if parent_code else None
        if row.parent_id != parent_id or row.path != paths[code]:
            row.parent_id = parent_id
            row.path = paths[code]
    await session.flush()
    await _load_ae_titles(session, doc, ids)
    return ids


async def _load_ae_titles(session: AsyncSession, doc: Mapping[str, Any], ids: Mapping[str, int]) -> None:
    """Make the stored AE titles of the file's institutions exactly the file's: the file owns every title it
    lists (a title moving between two of its institutions included); other institutions' titles stay."""
    owned = dict((await session.execute(select(InstitutionAETitle.ae_title, InstitutionAETitle.institution_id))).all())
    in_file = {ids[item["code"]] for item in doc["institutions"]}
    wanted = {ae: ids[item["code"]] for item in doc["institutions"] for ae in item.get("ae_titles", [])}
    stale = sorted(ae for ae, owner in owned.items() if owner in in_file and wanted.get(ae) != owner)
    missing = [{"ae_title": ae, "institution_id": owner} for ae, owner in wanted.items() if owned.get(ae) != owner]
    for chunk in _chunks(stale):
        await session.execute(delete(InstitutionAETitle).where(InstitutionAETitle.ae_title.in_(chunk)))
    if missing:
        await session.execute(insert(InstitutionAETitle), missing)
    charsets = {e["ae_title"]: e["charset"] for item in doc["institutions"] for e in item.get("ae_charsets") or []}
    stored = dict(
        (
            await session.execute(
                select(InstitutionAETitle.ae_title, InstitutionAETitle.charset).where(
                    InstitutionAETitle.charset.is_not(None)
                )
            )
        ).all()
    )
    for ae in sorted(set(wanted) & (set(charsets) | set(stored))):
        if stored.get(ae) != charsets.get(ae):
            await session.execute(
                update(InstitutionAETitle).where(InstitutionAETitle.ae_title == ae).values(charset=charsets.get(ae))
            )
    for item in doc["institutions"]:
        for node in item.get("dicom_nodes") or []:
            if wanted.get(node["ae_title"]) == ids[item["code"]]:
                await session.execute(
                    update(InstitutionAETitle)
                    .where(InstitutionAETitle.ae_title == node["ae_title"])
                    .values(host=node["host"], port=node["port"])
                )


async def _load_centers(
    session: AsyncSession,
    doc: Mapping[str, Any],
    institutions: Mapping[str, int],
    report: LoadReport,
    history: LoadHistory,
) -> dict[str, int]:
    by_code = {c.code: c for c in (await session.execute(select(Center))).scalars()}
    for idx, item in enumerate(doc.get("centers", [])):
        node = item.get("dicom_node") or {}
        values = {
            "name": item["name"],
            "institution_id": institutions[item["institution"]],
            "service": item["service"],
            "modalities": list(item.get("modalities", [])),
            "subspecialties": list(item.get("subspecialties", [])),
            "opening_hours": item.get("opening_hours"),
            "sla_minutes": dict(item["sla_minutes"]),
            "capacity": item["capacity"],
            "dicom_ae_title": node.get("ae_title"),
            "dicom_host": node.get("host"),
            "dicom_port": node.get("port"),
            "qc_failed": bool(item.get("qc_failed", False)),
            "note": item.get("note"),
        }
        row = by_code.get(item["code"])
        if row is None:
            row = Center(code=item["code"], **values)
            session.add(row)
            by_code[item["code"]] = row
            report.count("centers", "created")
        else:
            before = state_of("center", row)
            changed = _assign(row, values)
            report.count("centers", "updated" if changed else "unchanged")
            if changed:
                after = state_of("center", row)
                history.changed("center", row.id, row.code, row.institution_id, before, after, f"/centers/{idx}")
    await session.flush()
    return {code: row.id for code, row in by_code.items()}


AGREEMENT_FIELDS = ("lead_id", "valid_from", "valid_to", "services", "invited_share_bp")
RULE_FIELDS = ("position", "kind", "center_id", "modality", "body_part", "priority", "reason")


async def _load_networks(
    session: AsyncSession,
    doc: Mapping[str, Any],
    institutions: Mapping[str, int],
    centers: Mapping[str, int],
    report: LoadReport,
    today: date,
    history: LoadHistory,
) -> None:
    """Upsert networks, then make members and rules exactly the file's and agreements the file's: one query
    per table to read what is stored, bulk statements to write the difference. An agreement the file no
    longer lists is never deleted: its validity ends yesterday (local day), so its history stays."""
    by_code = {n.code: n for n in (await session.execute(select(Network))).scalars()}
    items = doc.get("networks", [])
    for item in items:
        values = {
            "name": item["name"],
            "lead_id": institutions[item["lead"]],
            "recognition_validity_days": dict(item.get("recognition_validity_days", {})),
            "homogeneous_sites": list(item.get("homogeneous_sites", [])),
        }
        net = by_code.get(item["code"])
        if net is None:
            by_code[item["code"]] = Network(code=item["code"], **values)
            session.add(by_code[item["code"]])
            report.count("networks", "created")
        else:
            report.count("networks", "updated" if _assign(net, values) else "unchanged")
    await session.flush()
    net_ids = [by_code[item["code"]].id for item in items]

    have_members: dict[int, set[int]] = defaultdict(set)
    for net_id, inst_id in await session.execute(select(NetworkMember.network_id, NetworkMember.institution_id)):
        have_members[net_id].add(inst_id)
    new_members: list[dict[str, int]] = []
    for net_id, item in zip(net_ids, items, strict=True):
        wanted_members = {institutions[m] for m in item.get("members", [])}
        have = have_members[net_id]
        if have - wanted_members:
            await session.execute(
                delete(NetworkMember).where(
                    NetworkMember.network_id == net_id, NetworkMember.institution_id.not_in(wanted_members)
                )
            )
        new_members += [{"network_id": net_id, "institution_id": i} for i in sorted(wanted_members - have)]
    if new_members:
        await session.execute(insert(NetworkMember), new_members)

    stored: dict[int, dict[int, tuple[Any, ...]]] = defaultdict(dict)
    columns = (
        Agreement.network_id,
        Agreement.member_id,
        Agreement.id,
        *(getattr(Agreement, f) for f in AGREEMENT_FIELDS),
    )
    for net_id, member_id, *rest in await session.execute(select(*columns)):
        stored[net_id][member_id] = tuple(rest)
    new_agreements: list[dict[str, Any]] = []
    changed_agreements: list[dict[str, Any]] = []
    stale: list[tuple[Any, ...]] = []
    code_of = {inst_id: code for code, inst_id in institutions.items()}
    net_code = {n.id: n.code for n in by_code.values()}

    def wire(row: tuple[Any, ...]) -> dict[str, Any]:
        _, _, valid_from, valid_to, services, share = row
        return state_of(
            "agreement",
            Agreement(valid_from=valid_from, valid_to=valid_to, services=services, invited_share_bp=share),
        )

    for n, (net_id, item) in enumerate(zip(net_ids, items, strict=True)):
        lead_id = institutions[item["lead"]]
        wanted_agreements = set()
        for j, a in enumerate(item.get("agreements", [])):
            member_id = institutions[a["member"]]
            wanted_agreements.add(member_id)
            values = {
                "lead_id": lead_id,
                "valid_from": _d(a["valid_from"]),
                "valid_to": _d(a["valid_to"]),
                "services": sorted(a["services"]),
                "invited_share_bp": a["invited_share_bp"],
            }
            row = stored[net_id].get(member_id)
            if row is None:
                new_agreements.append({"network_id": net_id, "member_id": member_id, **values})
                report.count("agreements", "created")
            elif tuple(values.values()) != row[1:]:
                changed_agreements.append({"id": row[0], **values})
                report.count("agreements", "updated")
                history.changed(
                    "agreement", row[0], f"{item['code']}/{a['member']}", lead_id, wire(row),
                    wire((row[0], *values.values())), f"/networks/{n}/agreements/{j}",
                )  # fmt: skip
            else:
                report.count("agreements", "unchanged")
        stale += [(net_id, m, row) for m, row in stored[net_id].items() if m not in wanted_agreements]
    ended = today - timedelta(days=1)
    for net_id, member_id, stale_row in stale:
        agreement_id, valid_from, valid_to = stale_row[0], stale_row[2], stale_row[3]
        if valid_to <= ended:
            continue  # ended already
        changed_agreements.append({"id": agreement_id, "valid_from": min(valid_from, ended), "valid_to": ended})
        report.count("agreements", "ended")
        after = (*stale_row[:2], min(valid_from, ended), ended, *stale_row[4:])
        history.changed(
            "agreement", agreement_id, f"{net_code[net_id]}/{code_of.get(member_id, member_id)}", stale_row[1],
            wire(stale_row), wire(after), f"/networks/{net_ids.index(net_id)}/agreements",
        )  # fmt: skip
    if changed_agreements:
        await session.execute(update(Agreement), changed_agreements)
    if new_agreements:
        await session.execute(insert(Agreement), new_agreements)

    have_rules: dict[int, list[dict[str, Any]]] = defaultdict(list)
    rule_columns = (RoutingRule.network_id, *(getattr(RoutingRule, f) for f in RULE_FIELDS))
    for net_id, *rest in await session.execute(
        select(*rule_columns).order_by(RoutingRule.network_id, RoutingRule.position)
    ):
        have_rules[net_id].append(dict(zip(RULE_FIELDS, rest, strict=True)))
    for net_id, item in zip(net_ids, items, strict=True):
        rules = [
            {
                "position": pos,
                "kind": r["kind"],
                "center_id": centers[r["center"]],
                "modality": r.get("modality"),
                "body_part": r.get("body_part"),
                "priority": r.get("priority"),
                "reason": r["reason"],
            }
            for pos, r in enumerate(item.get("rules", []))
        ]
        if rules != have_rules[net_id]:
            await session.execute(delete(RoutingRule).where(RoutingRule.network_id == net_id))
            session.add_all(RoutingRule(network_id=net_id, **r) for r in rules)
    await session.flush()


async def _load_fee_schedule(session: AsyncSession, doc: Mapping[str, Any], report: LoadReport) -> None:
    stored = await _stored_fees(session)
    for entry in doc.get("fee_schedule", []):
        key = _fee_key(entry)
        values = {"effective_to": _d(entry.get("effective_to")), "source": entry.get("source")}
        row = stored.get(key)
        if row is None:
            session.add(
                FeeScheduleEntry(
                    service=key[0],
                    modality=key[1],
                    priority=key[2],
                    subspecialty=key[3],
                    effective_from=key[4],
                    price_fen=entry["price_fen"],
                    **values,
                )
            )
            report.count("fee_schedule", "created")
        else:
            report.count("fee_schedule", "updated" if _assign(row, values) else "unchanged")


async def _load_users(
    hub: Hub,
    session: AsyncSession,
    doc: Mapping[str, Any],
    institutions: Mapping[str, int],
    centers: Mapping[str, int],
    report: LoadReport,
    history: LoadHistory,
) -> None:
    by_name = {u.username: u for u in (await session.execute(select(User))).scalars()}
    before: dict[str, dict[str, Any]] = {}
    items = doc.get("users", [])
    ids: dict[str, int] = {}
    created: list[dict[str, Any]] = []
    for item in items:
        values = {
            "role": item["role"],
            "institution_id": institutions[item["institution"]],
            "display_name": item.get("display_name"),
            "title": item.get("title"),
            "practice_since": _d(item.get("practice_since")),
        }
        row = by_name.get(item["username"])
        if row is None:
            created.append({"username": item["username"], "active": True, "created_at": hub.clock.now(), **values})
            report.count("users", "created")
        else:
            ids[row.username] = row.id
            before[row.username] = state_of("account", row)
            report.count("users", "updated" if _assign(row, values) else "unchanged")
    if created:
        await session.execute(insert(User), created)
        ids.update({name: user_id for name, user_id in await session.execute(select(User.username, User.id))})
    have: dict[int, set[int]] = defaultdict(set)
    for user_id, center_id in await session.execute(select(UserCenter.user_id, UserCenter.center_id)):
        have[user_id].add(center_id)
    new_links: list[dict[str, int]] = []
    center_code = {center_id: code for code, center_id in centers.items()}
    for idx, item in enumerate(items):
        user_id = ids[item["username"]]
        wanted = {centers[c] for c in item.get("centers", [])}
        old = before.get(item["username"])
        if old is not None:
            user = by_name[item["username"]]
            old["centers"] = sorted(center_code[c] for c in have[user_id] if c in center_code)
            after = state_of("account", user, sorted(center_code[c] for c in wanted))
            history.changed("account", user_id, user.username, user.institution_id, old, after, f"/users/{idx}")
        if have[user_id] - wanted:
            await session.execute(
                delete(UserCenter).where(UserCenter.user_id == user_id, UserCenter.center_id.not_in(wanted))
            )
        new_links += [{"user_id": user_id, "center_id": c} for c in sorted(wanted - have[user_id])]
        row = by_name.get(item["username"])
        if row is None or row.password_hash is None:
            report.users_without_password.append(item["username"])
    if new_links:
        await session.execute(insert(UserCenter), new_links)
    for item in items:
        if item.get("practice_since") or item.get("licence_number") or item.get("title"):
            await practitioners.upsert(
                session,
                ids[item["username"]],
                now=hub.clock.now(),
                by="network-file",
                title=item.get("title"),
                practice_since=_d(item.get("practice_since")),
                licence_number=item.get("licence_number"),
            )
