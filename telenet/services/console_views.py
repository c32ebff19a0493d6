"""Read views the console needs beyond the API's: the open critical findings of a requesting institution
(the banner on every page) and the report templates (常用模板) per modality and body part."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from telenet.domain.access import Actor, Role
from telenet.services.hub import Hub
from telenet.store.models import CriticalFinding, Patient, Request


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
