"""``telenet network load``: validate a network file completely, then upsert it in one transaction."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from telenet.domain.access import Actor
from telenet.domain.errors import Invalid
from telenet.domain.registry import LocatedError, check_network, compute_paths
from telenet.schemas import schema_errors
from telenet.services.hub import Hub, use_case
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

NETWORK_SCHEMA = "network"


@dataclass
class LoadReport:
    """What a load changed: ``{"institutions": {"created": n, "updated": n, "unchanged": n}, ...}``."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    users_without_password: list[str] = field(default_factory=list)

    def count(self, section: str, outcome: str) -> None:
        bucket = self.counts.setdefault(section, {"created": 0, "updated": 0, "unchanged": 0})
        bucket[outcome] += 1

    @property
    def changed(self) -> int:
        return sum(c["created"] + c["updated"] for c in self.counts.values())


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
    errors = schema_errors(NETWORK_SCHEMA, doc)
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
        institutions = await _load_institutions(hub, session, doc, existing, report)
        centers = await _load_centers(session, doc, institutions, report)
        await _load_networks(session, doc, institutions, centers, report)
        await _load_fee_schedule(session, doc, report)
        await _load_users(hub, session, doc, institutions, centers, report)
        uow.audit(detail={"counts": report.counts})
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


async def _load_institutions(
    hub: Hub,
    session: AsyncSession,
    doc: Mapping[str, Any],
    existing: dict[str, Institution],
    report: LoadReport,
) -> dict[str, Institution]:
    now = hub.clock.now()
    by_code = dict(existing)
    for item in doc["institutions"]:
        dest = item.get("hl7_destination") or {}
        values = {
            "name": item["name"],
            "tier": item["tier"],
            "kind": item["kind"],
            "grade": item["grade"],
            "hl7_facility": item.get("hl7_facility"),
            "hl7_host": dest.get("host"),
            "hl7_port": dest.get("port"),
        }
        row = by_code.get(item["code"])
        if row is None:
            row = Institution(code=item["code"], path="", created_at=now, updated_at=now, **values)
            session.add(row)
            by_code[item["code"]] = row
            report.count("institutions", "created")
        elif _assign(row, values):
            row.updated_at = now
            report.count("institutions", "updated")
        else:
            report.count("institutions", "unchanged")
    await session.flush()
    code_of = {row.id: code for code, row in by_code.items()}
    parents: dict[str, str | None] = {
        code: code_of[row.parent_id] if row.parent_id is not None else None for code, row in by_code.items()
    }
    parents.update({i["code"]: i.get("parent") for i in doc["institutions"]})
    paths = compute_paths([{"code": c, "parent": p} for c, p in parents.items()], {})
    for code, row in by_code.items():
        parent_code = parents[code]
        parent_id = by_code[parent_code].id if parent_code else None
        if row.parent_id != parent_id or row.path != paths[code]:
            row.parent_id = parent_id
            row.path = paths[code]
    owned = {}
    for ae, inst_id in (
        await session.execute(select(InstitutionAETitle.ae_title, InstitutionAETitle.institution_id))
    ).all():
        owned[ae] = inst_id
    for item in doc["institutions"]:
        row = by_code[item["code"]]
        wanted = set(item.get("ae_titles", []))
        have = {ae for ae, inst_id in owned.items() if inst_id == row.id}
        if wanted != have:
            await session.execute(
                delete(InstitutionAETitle).where(
                    InstitutionAETitle.institution_id == row.id, InstitutionAETitle.ae_title.not_in(wanted)
                )
            )
            for ae in sorted(wanted - have):
                if ae in owned:  # moved from another institution of this file
                    await session.execute(delete(InstitutionAETitle).where(InstitutionAETitle.ae_title == ae))
                session.add(InstitutionAETitle(ae_title=ae, institution_id=row.id))
            await session.flush()
    return by_code


async def _load_centers(
    session: AsyncSession, doc: Mapping[str, Any], institutions: Mapping[str, Institution], report: LoadReport
) -> dict[str, Center]:
    by_code = {c.code: c for c in (await session.execute(select(Center))).scalars()}
    for item in doc.get("centers", []):
        node = item.get("dicom_node") or {}
        values = {
            "name": item["name"],
            "institution_id": institutions[item["institution"]].id,
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
            report.count("centers", "updated" if _assign(row, values) else "unchanged")
    await session.flush()
    return by_code


async def _load_networks(
    session: AsyncSession,
    doc: Mapping[str, Any],
    institutions: Mapping[str, Institution],
    centers: Mapping[str, Center],
    report: LoadReport,
) -> None:
    by_code = {n.code: n for n in (await session.execute(select(Network))).scalars()}
    for item in doc.get("networks", []):
        lead = institutions[item["lead"]]
        values = {
            "name": item["name"],
            "lead_id": lead.id,
            "recognition_validity_days": dict(item.get("recognition_validity_days", {})),
        }
        net = by_code.get(item["code"])
        if net is None:
            net = Network(code=item["code"], **values)
            session.add(net)
            await session.flush()
            report.count("networks", "created")
        else:
            report.count("networks", "updated" if _assign(net, values) else "unchanged")
        wanted_members = {institutions[m].id for m in item.get("members", [])}
        have_members = set(
            (
                await session.execute(select(NetworkMember.institution_id).where(NetworkMember.network_id == net.id))
            ).scalars()
        )
        if wanted_members != have_members:
            await session.execute(
                delete(NetworkMember).where(
                    NetworkMember.network_id == net.id, NetworkMember.institution_id.not_in(wanted_members)
                )
            )
            session.add_all(NetworkMember(network_id=net.id, institution_id=i) for i in wanted_members - have_members)
        agreements = {
            a.member_id: a
            for a in (await session.execute(select(Agreement).where(Agreement.network_id == net.id))).scalars()
        }
        wanted_agreements = set()
        for a in item.get("agreements", []):
            member_id = institutions[a["member"]].id
            wanted_agreements.add(member_id)
            values = {
                "lead_id": lead.id,
                "valid_from": _d(a["valid_from"]),
                "valid_to": _d(a["valid_to"]),
                "services": sorted(a["services"]),
                "invited_share_bp": a["invited_share_bp"],
            }
            row = agreements.get(member_id)
            if row is None:
                session.add(Agreement(network_id=net.id, member_id=member_id, **values))
                report.count("agreements", "created")
            else:
                report.count("agreements", "updated" if _assign(row, values) else "unchanged")
        stale = set(agreements) - wanted_agreements
        if stale:
            await session.execute(
                delete(Agreement).where(Agreement.network_id == net.id, Agreement.member_id.in_(stale))
            )
        rules = [
            {
                "position": pos,
                "kind": r["kind"],
                "center_id": centers[r["center"]].id,
                "modality": r.get("modality"),
                "body_part": r.get("body_part"),
                "priority": r.get("priority"),
                "reason": r["reason"],
            }
            for pos, r in enumerate(item.get("rules", []))
        ]
        have_rules = [
            {
                "position": r.position,
                "kind": r.kind,
                "center_id": r.center_id,
                "modality": r.modality,
                "body_part": r.body_part,
                "priority": r.priority,
                "reason": r.reason,
            }
            for r in (
                await session.execute(
                    select(RoutingRule).where(RoutingRule.network_id == net.id).order_by(RoutingRule.position)
                )
            ).scalars()
        ]
        if rules != have_rules:
            await session.execute(delete(RoutingRule).where(RoutingRule.network_id == net.id))
            session.add_all(RoutingRule(network_id=net.id, **r) for r in rules)
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
    institutions: Mapping[str, Institution],
    centers: Mapping[str, Center],
    report: LoadReport,
) -> None:
    by_name = {u.username: u for u in (await session.execute(select(User))).scalars()}
    for item in doc.get("users", []):
        values = {
            "role": item["role"],
            "institution_id": institutions[item["institution"]].id,
            "display_name": item.get("display_name"),
            "title": item.get("title"),
            "practice_since": _d(item.get("practice_since")),
        }
        row = by_name.get(item["username"])
        if row is None:
            row = User(username=item["username"], active=True, created_at=hub.clock.now(), **values)
            session.add(row)
            await session.flush()
            report.count("users", "created")
        else:
            report.count("users", "updated" if _assign(row, values) else "unchanged")
        wanted = {centers[c].id for c in item.get("centers", [])}
        have = set((await session.execute(select(UserCenter.center_id).where(UserCenter.user_id == row.id))).scalars())
        if wanted != have:
            await session.execute(
                delete(UserCenter).where(UserCenter.user_id == row.id, UserCenter.center_id.not_in(wanted))
            )
            session.add_all(UserCenter(user_id=row.id, center_id=c) for c in wanted - have)
        if row.password_hash is None:
            report.users_without_password.append(row.username)
