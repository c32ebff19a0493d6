"""Read views the console needs beyond the API's: the open critical findings of a requesting institution
(the banner on every page) and the report templates (常用模板) per modality and body part."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import select

from telenet.domain.access import Actor, Role
from telenet.domain.errors import Forbidden
from telenet.services.access import center_by_code
from telenet.services.hub import Hub, read_use_case
from telenet.services.outbox import outbox_view
from telenet.store.models import CriticalFinding, HL7Destination, HL7OutboxItem, Patient, Request


async def open_criticals(hub: Hub, actor: Actor) -> list[dict[str, Any]]:
    """Critical findings of the actor's institution's requests not yet acknowledged (requesting side only)."""
    if actor.role is not Role.REQUESTER:
        return []
    async with hub.reader() as session:
        rows = (
            await session.execute(
                select(CriticalFinding, Request.accession_number, Patient.name)
                .join(Request, Request.id == CriticalFinding.request_id)
                .join(Patient, Patient.id == Request.patient_id)
                .where(
                    Request.requesting_institution_id == actor.institution_id,
                    CriticalFinding.acknowledged_at.is_(None),
                )
                .order_by(CriticalFinding.deadline_at)
                .limit(20)
            )
        ).all()
    return [
        {
            "id": finding.id,
            "request_id": finding.request_id,
            "accession_number": accession,
            "patient_name": name,
            "items": finding.items,
            "raised_by": finding.raised_by,
            "deadline_at": finding.deadline_at,
        }
        for finding, accession, name in rows
    ]


async def center_hl7_backlog(hub: Hub, actor: Actor, center_code: str, *, limit: int = 50) -> dict[str, Any]:
    """The HL7 results (ORU) of a center's requests still waiting for delivery to the requesting HIS, oldest
    first, with each destination's state: the coordinator's view of the outbox (admins see their subtree's
    under /api/v1/hl7/outbox)."""
    if actor.role is not Role.COORDINATOR or center_code not in actor.center_codes:
        raise Forbidden(f"{center_code} is not one of your centers", code="scope")
    async with read_use_case(hub, actor, "hl7.outbox.read", "center", center_code) as uow:
        center, inst = await center_by_code(uow.session, center_code)
        uow.audit(object_path=inst.path)
        rows = (
            await uow.session.execute(
                select(HL7OutboxItem, HL7Destination.down_since)
                .join(Request, Request.id == HL7OutboxItem.request_id)
                .outerjoin(
                    HL7Destination,
                    (HL7Destination.host == HL7OutboxItem.destination_host)
                    & (HL7Destination.port == HL7OutboxItem.destination_port),
                )
                .where(Request.center_id == center.id, HL7OutboxItem.status == "pending")
                .order_by(HL7OutboxItem.id)
                .limit(limit)
            )
        ).all()
    return {"items": [{**outbox_view(item), "down_since": down} for item, down in rows]}


# 常用模板: (modality, body part or "*") -> (name, findings, impression). Readers edit them before signing.
TEMPLATES: dict[tuple[str, str], list[tuple[str, str, str]]] = {
    ("DX", "CHEST"): [
        (
            "胸部正位片 正常",
            "胸廓对称，气管居中。双肺纹理清晰，未见明确实变及结节影。双肺门不大。心影大小形态未见异常。"
            "双侧膈面光整，肋膈角锐利。",
            "胸部正位片未见明显异常。",
        ),
        (
            "气胸",
            "右侧胸腔可见无肺纹理透亮区，肺组织受压向肺门方向萎陷，压缩约40%。纵隔轻度左移。",
            "右侧气胸（肺组织压缩约40%），请临床及时处理。",
        ),
    ],
    ("CT", "HEAD"): [
        (
            "头颅CT平扫 正常",
            "脑实质内未见异常密度影，脑室系统未见扩大，中线结构居中，颅骨未见骨折。",
            "头颅CT平扫未见明显异常。",
        ),
        (
            "脑出血",
            "左侧基底节区见团块状高密度影，周围见低密度水肿带，左侧侧脑室受压，中线结构右移。",
            "左侧基底节区脑出血，建议立即神经外科会诊。",
        ),
    ],
    ("ECG", "*"): [
        ("窦性心律 正常心电图", "窦性心律，各导联波形未见明显异常。", "正常心电图。"),
        (
            "急性下壁心肌梗死",
            "II、III、aVF 导联 ST 段弓背向上抬高，I、aVL 导联 ST 段压低。",
            "急性下壁 ST 段抬高型心肌梗死，危急值，请立即处理。",
        ),
    ],
}


def templates_for(modality: str | None, body_part: str | None) -> list[dict[str, str]]:
    """The templates for a modality and body part, most specific first (then the modality's general ones)."""
    found: list[tuple[str, str, str]] = []
    for key in ((modality or "", (body_part or "").upper()), (modality or "", "*")):
        found.extend(TEMPLATES.get(key, []))
    return [{"name": n, "findings": f, "impression": i} for n, f, i in found]


def board(worklist_items: list[dict[str, Any]], readers: Sequence[str] = ()) -> dict[str, Any]:
    """A center's board from its worklist: depth, oldest waiting, SLA breaches and each reader's claims
    (every reader of the center, those without a claim too)."""
    queued = [i for i in worklist_items if i["state"] == "queued"]
    claims: dict[str, int] = dict.fromkeys(readers, 0)
    for item in worklist_items:
        if item["state"] == "claimed" and item.get("claimed_by"):
            claims[item["claimed_by"]] = claims.get(item["claimed_by"], 0) + 1
    remaining = [i["sla_remaining_minutes"] for i in worklist_items if i.get("sla_remaining_minutes") is not None]
    return {
        "depth": len(queued),
        "claimed": len(worklist_items) - len(queued),
        "oldest_waiting_minutes": max((i["waiting_minutes"] for i in queued), default=None),
        "breaches": sum(1 for m in remaining if m < 0),
        "claims": sorted(claims.items()),
    }


async def registry_tree(hub: Hub, actor: Actor, on: date) -> list[dict[str, Any]]:
    """The admin's subtree as a tree of the five tiers, each institution with its centers and the
    agreements in force on ``on`` in which it is the member (the inviting side)."""
    from telenet.store.models import Agreement, Center, Institution, Network

    async with hub.reader() as session:
        institutions = (
            (
                await session.execute(
                    select(Institution)
                    .where(Institution.path.startswith(actor.institution_path))
                    .order_by(Institution.path)
                )
            )
            .scalars()
            .all()
        )
        ids = [i.id for i in institutions]
        centers = (await session.execute(select(Center).where(Center.institution_id.in_(ids)))).scalars().all()
        lead = Institution.__table__.alias("lead")
        agreements = (
            await session.execute(
                select(Agreement, Network.code, lead.c.name)
                .join(Network, Network.id == Agreement.network_id)
                .join(lead, lead.c.id == Agreement.lead_id)
                .where(Agreement.member_id.in_(ids), Agreement.valid_from <= on, Agreement.valid_to >= on)
            )
        ).all()
    nodes: dict[int, dict[str, Any]] = {}
    roots: list[dict[str, Any]] = []
    for inst in institutions:
        node = {
            "code": inst.code,
            "name": inst.name,
            "tier": inst.tier,
            "centers": [],
            "agreements": [],
            "children": [],
        }
        nodes[inst.id] = node
        parent = nodes.get(inst.parent_id) if inst.parent_id else None
        (parent["children"] if parent else roots).append(node)
    for center in centers:
        nodes[center.institution_id]["centers"].append({"code": center.code, "name": center.name})
    for agreement, network, lead_name in agreements:
        nodes[agreement.member_id]["agreements"].append(
            {
                "network": network,
                "lead": lead_name,
                "services": agreement.services,
                "valid_to": agreement.valid_to.isoformat(),
                "invited_share_bp": agreement.invited_share_bp,
            }
        )
    return roots
