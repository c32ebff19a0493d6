"""Storage commitment (IHE RAD-10, DICOM Storage Commitment Push Model): which of the instances a modality
asks about the hub has durably stored and indexed, and which not with the reason; and where the modality
listens when the report cannot go back on its own association.

Protocol-free: the DICOM gateway turns the N-ACTION into :func:`check` and the result into an N-EVENT-REPORT.
An instance counts as committed only when its index row exists (written after the file was fsynced and
renamed into the store), it is the SOP class the modality names, and it was sent by the asking institution's
subtree; the gateway also checks the file is still on disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select

from telenet.domain.access import Actor, Role
from telenet.domain.tiers import is_within
from telenet.services.access import require_role
from telenet.services.hub import Hub, use_case
from telenet.store.models import DicomInstance, DicomStudy, InstitutionAETitle

#: Failure Reason (0008,1197), PS3.3 C.14.1.1.
NO_SUCH_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
PROCESSING_FAILURE = 0x0110
MAX_REFERENCES = 10_000


@dataclass(frozen=True)
class Reference:
    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True)
class Stored:
    reference: Reference
    path: str


@dataclass(frozen=True)
class Failed:
    reference: Reference
    reason: int


@dataclass(frozen=True)
class CommitmentResult:
    transaction_uid: str
    stored: tuple[Stored, ...]
    failed: tuple[Failed, ...]


async def check(hub: Hub, actor: Actor, transaction_uid: str, references: Sequence[Reference]) -> CommitmentResult:
    """What of ``references`` is stored and indexed for the asking institution; audited per transaction."""
    require_role(actor, Role.INTEGRATION, action="ask for storage commitment")
    references = list(references)[:MAX_REFERENCES]
    async with use_case(hub, actor, "dicom.storage_commitment", "dicom_instance", transaction_uid) as uow:
        uow.audit(object_path=actor.institution_path)
        rows: dict[str, tuple[str, str, str]] = {}
        uids = [r.sop_instance_uid for r in references]
        for start in range(0, len(uids), 500):
            chunk = uids[start : start + 500]
            result = await uow.session.execute(
                select(DicomInstance.sop_instance_uid, DicomInstance.sop_class_uid, DicomInstance.path,
                       DicomStudy.source_path)
                .join(DicomStudy, DicomStudy.id == DicomInstance.study_id)
                .where(DicomInstance.sop_instance_uid.in_(chunk))
            )  # fmt: skip
            rows.update({uid: (cls, path, source) for uid, cls, path, source in result.all()})
        stored: list[Stored] = []
        failed: list[Failed] = []
        for ref in references:
            row = rows.get(ref.sop_instance_uid)
            if row is None or not is_within(row[2], actor.institution_path):
                failed.append(Failed(ref, NO_SUCH_INSTANCE))
            elif row[0] != ref.sop_class_uid:
                failed.append(Failed(ref, CLASS_INSTANCE_CONFLICT))
            else:
                stored.append(Stored(ref, row[1]))
        uow.audit(detail={"transaction_uid": transaction_uid, "stored": len(stored), "failed": len(failed)})
        return CommitmentResult(transaction_uid, tuple(stored), tuple(failed))


async def node_of(hub: Hub, ae_title: str) -> tuple[str, int] | None:
    """Where a registered modality listens (the network file's ``dicom_nodes``), if it says."""
    async with hub.reader() as session:
        row = (
            await session.execute(
                select(InstitutionAETitle.host, InstitutionAETitle.port).where(
                    InstitutionAETitle.ae_title == ae_title.strip()
                )
            )
        ).one_or_none()
    if row is None or not row[0] or not row[1]:
        return None
    return str(row[0]), int(row[1])
