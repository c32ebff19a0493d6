"""Reading the registry: the institution directory, centers, and the audit trail for admins."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select

from telenet.domain.access import Actor, Role
from telenet.domain.errors import Forbidden, Invalid, NotFound
from telenet.domain.tiers import Tier, path_codes
from telenet.services.hub import Hub, read_use_case
from telenet.store.models import AuditEntry, Center, Institution, InstitutionAETitle


def _institution_view(inst: Institution, parent_code: str | None, ae_titles: list[str], actor: Actor) -> dict[str, Any]:
    """The directory entry; integration details (AE titles, HL7 endpoints) only inside the actor's scope."""
    view: dict[str, Any] = {
        "code": inst.code,
        "name": inst.name,
        "tier": inst.tier,
        "parent": parent_code,
        "kind": inst.kind,
        "grade": inst.grade,
        "path": path_codes(inst.path),
    }
    if actor.sees_institution(inst.path):
        view["ae_titles"] = ae_titles
        view["hl7_facility"] = inst.hl7_facility
        view["hl7_destination"] = (
            {"host": inst.hl7_host, "port": inst.hl7_port} if inst.hl7_host and inst.hl7_port else None
        )
    return view


async def list_institutions(
    hub: Hub,
    actor: Actor,
    tier: str | None = None,
    within: str | None = None,
    limit: int = 500,
    offset: int = 0,
) -> dict[str, Any]:
    """The network directory (every authenticated user may read names and tiers), optionally one tier
    or one subtree."""
    if tier is not None and tier not in {t.value for t in Tier}:
        raise Invalid(f"unknown tier {tier!r}; one of {', '.join(t.value for t in Tier)}", code="bad-parameter")
    async with read_use_case(hub, actor, "institution.list", "institution") as uow:
        parent = Institution.__table__.alias("parent")
        query = select(Institution, parent.c.code).outerjoin(parent, parent.c.id == Institution.parent_id)
        if tier:
            query = query.where(Institution.tier == tier)
        if within:
            root = (
                await uow.session.execute(select(Institution.path).where(Institution.code == within))
            ).scalar_one_or_none()
            if root is None:
                raise NotFound(f"no institution {within!r}")
            query = query.where(Institution.path.startswith(root))
        rows = (await uow.session.execute(query.order_by(Institution.path).limit(limit).offset(offset))).all()
        ids = [inst.id for inst, _ in rows]
        ae = await _ae_titles(uow.session, ids)
        uow.audit(detail={"tier": tier, "within": within, "count": len(rows)})
        return {
            "items": [_institution_view(i, p, ae.get(i.id, []), actor) for i, p in rows],
            "limit": limit,
            "offset": offset,
        }


async def get_institution(hub: Hub, actor: Actor, code: str) -> dict[str, Any]:
    async with read_use_case(hub, actor, "institution.read", "institution", code) as uow:
        parent = Institution.__table__.alias("parent")
        row = (
            await uow.session.execute(
                select(Institution, parent.c.code)
                .outerjoin(parent, parent.c.id == Institution.parent_id)
                .where(Institution.code == code)
            )
        ).one_or_none()
        if row is None:
            raise NotFound(f"no institution {code!r}")
        inst, parent_code = row
        uow.audit(object_path=inst.path)
        ae = await _ae_titles(uow.session, [inst.id])
        view = _institution_view(inst, parent_code, ae.get(inst.id, []), actor)
        centers = (
            (await uow.session.execute(select(Center).where(Center.institution_id == inst.id).order_by(Center.code)))
            .scalars()
            .all()
        )
        view["centers"] = [c.code for c in centers]
        return view


async def _ae_titles(session: Any, ids: list[int]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    if not ids:
        return found
    for ae, inst_id in (
        await session.execute(
            select(InstitutionAETitle.ae_title, InstitutionAETitle.institution_id)
            .where(InstitutionAETitle.institution_id.in_(ids))
            .order_by(InstitutionAETitle.ae_title)
        )
    ).all():
        found.setdefault(inst_id, []).append(ae)
    return found


def center_view(center: Center, institution: Institution) -> dict[str, Any]:
    return {
        "code": center.code,
        "name": center.name,
        "institution": institution.code,
        "institution_name": institution.name,
        "tier": institution.tier,
        "service": center.service,
        "modalities": center.modalities,
        "subspecialties": center.subspecialties,
        "opening_hours": center.opening_hours,
        "sla_minutes": center.sla_minutes,
        "capacity": center.capacity,
        "dicom_node": (
            {"ae_title": center.dicom_ae_title, "host": center.dicom_host, "port": center.dicom_port}
            if center.dicom_ae_title
            else None
        ),
        "qc_failed": center.qc_failed,
    }


async def list_centers(hub: Hub, actor: Actor, service: str | None = None) -> dict[str, Any]:
    """Every center of the network (a directory: where requests can go and who reads them)."""
    async with read_use_case(hub, actor, "center.list", "center") as uow:
        query = select(Center, Institution).join(Institution, Institution.id == Center.institution_id)
        if service:
            query = query.where(Center.service == service)
        rows = (await uow.session.execute(query.order_by(Institution.path, Center.code))).all()
        uow.audit(detail={"count": len(rows)})
        return {"items": [center_view(c, i) for c, i in rows]}


async def list_audit(
    hub: Hub,
    actor: Actor,
    *,
    institution: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> dict[str, Any]:
    """The audit trail of the admin's subtree (objects in it, or actions by its people), newest first."""
    if actor.role is not Role.ADMIN:
        raise Forbidden("only admins read the audit trail", code="role")
    if hub.audit_writer is not None:
        await hub.audit_writer.drain()  # rows still in the journal are in the table before the search
    async with read_use_case(hub, actor, "audit.read", "audit", institution) as uow:
        root = actor.institution_path
        if institution:
            path = (
                await uow.session.execute(select(Institution.path).where(Institution.code == institution))
            ).scalar_one_or_none()
            if path is None:
                raise NotFound(f"no institution {institution!r}")
            uow.audit(object_path=path)
            if not path.startswith(actor.institution_path):
                raise Forbidden(f"{institution} is outside your subtree", code="scope")
            root = path
        query = select(AuditEntry).where(
            or_(AuditEntry.object_path.startswith(root), AuditEntry.actor_institution_path.startswith(root))
        )
        if action:
            query = query.where(AuditEntry.action == action)
        if since:
            query = query.where(AuditEntry.at >= since)
        if until:
            query = query.where(AuditEntry.at < until)
        if before_id:
            query = query.where(AuditEntry.id < before_id)
        rows = (await uow.session.execute(query.order_by(AuditEntry.id.desc()).limit(limit))).scalars().all()
        uow.audit(object_path=root, detail={"count": len(rows)})
        return {
            "items": [
                {
                    "id": r.id,
                    "at": r.at.isoformat(),
                    "actor": r.actor,
                    "action": r.action,
                    "object_type": r.object_type,
                    "object_id": r.object_id,
                    "remote_addr": r.remote_addr,
                    "outcome": r.outcome,
                    "detail": r.detail,
                }
                for r in rows
            ],
            "next_before_id": rows[-1].id if len(rows) == limit else None,
        }
