"""The durable forwarding queue: studies on their way to a center's PACS (C-STORE SCU in the DICOM gateway).

A job is a row written in the transaction that decides the forward (routing, completion, escalation). The
gateway's worker claims due jobs (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, a conditional UPDATE
everywhere), sends, and reports back; a failure is retried with exponential backoff until a limit, then the
job is dead-lettered. A destination that stops answering raises one alert for the outage, not one per job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from telenet.domain.access import Actor, Role
from telenet.domain.errors import Conflict, Forbidden, Invalid, NotFound
from telenet.domain.tiers import is_within
from telenet.services.access import denied
from telenet.services.events import emit
from telenet.services.hub import Hub, read_use_case, use_case
from telenet.store.models import (
    Center,
    DicomInstance,
    DicomStudy,
    ForwardDestination,
    ForwardJob,
    Institution,
    Request,
)

log = logging.getLogger(__name__)

STATES = ("pending", "sending", "done", "dead")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 12
    backoff_seconds: float = 5.0
    backoff_max_seconds: float = 600.0
    lease_seconds: float = 300.0

    def delay(self, attempts: int) -> float:
        """Seconds before attempt ``attempts + 1``: base × 2^(attempts-1), capped."""
        return float(min(self.backoff_seconds * 2 ** max(attempts - 1, 0), self.backoff_max_seconds))


@dataclass(frozen=True)
class ForwardFile:
    path: str
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str


@dataclass(frozen=True)
class ForwardTask:
    """A claimed job: where to send which files."""

    job_id: int
    attempts: int
    study_instance_uid: str
    center_code: str
    ae_title: str
    host: str
    port: int
    files: tuple[ForwardFile, ...]

    @property
    def destination(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def destination_of(center: Center) -> str | None:
    if not center.dicom_ae_title or not center.dicom_host or not center.dicom_port:
        return None
    return f"{center.dicom_ae_title}@{center.dicom_host}:{center.dicom_port}"


async def enqueue(session: AsyncSession, hub: Hub, study: DicomStudy, request: Request, center: Center) -> bool:
    """Add a job to forward ``study`` to ``center``'s node in the caller's transaction (one pending job per
    study and center is enough: a job sends every instance the study has when it runs)."""
    destination = destination_of(center)
    if destination is None:
        return False
    pending = (
        await session.execute(
            select(ForwardJob.id).where(
                ForwardJob.study_id == study.id,
                ForwardJob.center_id == center.id,
                ForwardJob.state == "pending",
            )
        )
    ).first()
    if pending is not None:
        return False
    now = hub.clock.now()
    session.add(
        ForwardJob(
            study_id=study.id,
            request_id=request.id,
            center_id=center.id,
            destination=destination,
            state="pending",
            attempts=0,
            next_attempt_at=now,
            instances_sent=0,
            created_at=now,
            updated_at=now,
        )
    )
    await session.flush()
    return True


async def ensure_jobs(hub: Hub) -> int:
    """Safety net after a crash between a completion and its enqueue: every linked, complete study of a
    request past ``ordered`` at a center with a node has a job for that center."""
    added = 0
    async with use_case(hub, None, "dicom.forward.ensure", "dicom_study") as uow:
        session = uow.session
        rows = (
            await session.execute(
                select(DicomStudy, Request, Center)
                .join(Request, Request.id == DicomStudy.request_id)
                .join(Center, Center.id == Request.center_id)
                .where(
                    Request.state.in_(("queued", "claimed", "final", "returned")),
                    Center.dicom_ae_title.is_not(None),
                    DicomStudy.instance_count > 0,
                    ~exists().where(ForwardJob.study_id == DicomStudy.id, ForwardJob.center_id == Center.id),
                )
                .limit(500)
            )
        ).all()
        for study, request, center in rows:
            if await enqueue(session, hub, study, request, center):
                added += 1
    return added


async def release_orphans(hub: Hub) -> int:
    """Jobs left ``sending`` by a forwarder that is gone: called when this process takes over the forwarder's
    exclusive lock, so they are retried now instead of when their lease runs out."""
    now = hub.clock.now()
    async with hub.sessions() as session:
        result = await session.execute(
            update(ForwardJob)
            .where(ForwardJob.state == "sending")
            .values(state="pending", lease_until=None, updated_at=now)
        )
        await session.commit()
    return int(getattr(result, "rowcount", 0) or 0)


async def claim_due(hub: Hub, policy: RetryPolicy, *, limit: int = 8) -> list[ForwardTask]:
    """Take due jobs (and jobs whose sender died holding them) for sending; each row goes to one worker."""
    now = hub.clock.now()
    tasks: list[ForwardTask] = []
    async with use_case(hub, None, "dicom.forward.claim", "dicom_forward_job") as uow:
        session = uow.session
        query = (
            select(ForwardJob)
            .where(
                ((ForwardJob.state == "pending") & (ForwardJob.next_attempt_at <= now))
                | ((ForwardJob.state == "sending") & (ForwardJob.lease_until < now))
            )
            .order_by(ForwardJob.next_attempt_at, ForwardJob.id)
            .limit(limit)
        )
        if hub.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        jobs = (await session.execute(query)).scalars().all()
        for job in jobs:
            claimed = await session.execute(
                update(ForwardJob)
                .where(ForwardJob.id == job.id, ForwardJob.state == job.state, ForwardJob.updated_at == job.updated_at)
                .values(state="sending", lease_until=now + timedelta(seconds=policy.lease_seconds), updated_at=now)
                .execution_options(synchronize_session=False)
            )
            if getattr(claimed, "rowcount", 0) != 1:
                continue
            center = await session.get(Center, job.center_id)
            study = await session.get(DicomStudy, job.study_id)
            assert center is not None and study is not None
            destination = destination_of(center)
            if destination is None:
                job.state = "dead"
                job.last_error = f"center {center.code} no longer has a DICOM node"
                job.done_at = now
                continue
            job.destination = destination
            files = (
                await session.execute(
                    select(
                        DicomInstance.path,
                        DicomInstance.sop_class_uid,
                        DicomInstance.sop_instance_uid,
                        DicomInstance.transfer_syntax_uid,
                    )
                    .where(DicomInstance.study_id == study.id)
                    .order_by(DicomInstance.id)
                )
            ).all()
            assert center.dicom_ae_title and center.dicom_host and center.dicom_port
            tasks.append(
                ForwardTask(
                    job_id=job.id,
                    attempts=job.attempts,
                    study_instance_uid=study.study_instance_uid,
                    center_code=center.code,
                    ae_title=center.dicom_ae_title,
                    host=center.dicom_host,
                    port=center.dicom_port,
                    files=tuple(ForwardFile(*row) for row in files),
                )
            )
    return tasks


async def delivered(hub: Hub, task: ForwardTask, sent: int) -> None:
    """The destination accepted every instance: the job is done; an outage of the destination is over."""
    async with use_case(hub, None, "dicom.forward.done", "dicom_forward_job", str(task.job_id)) as uow:
        session = uow.session
        now = hub.clock.now()
        await session.execute(
            update(ForwardJob)
            .where(ForwardJob.id == task.job_id)
            .values(state="done", done_at=now, updated_at=now, instances_sent=sent, last_error=None, lease_until=None)
            .execution_options(synchronize_session=False)
        )
        dest = await session.get(ForwardDestination, task.destination)
        if dest is None:
            center_id = (await session.get(ForwardJob, task.job_id)).center_id  # type: ignore[union-attr]
            session.add(ForwardDestination(destination=task.destination, center_id=center_id, last_success_at=now))
        else:
            if dest.down_since is not None:
                await emit(
                    session,
                    hub,
                    "forwarding.destination_up",
                    [f"worklist:{task.center_code}"],
                    {"destination": task.destination, "center": task.center_code, "down_since": _iso(dest.down_since)},
                )
                log.info("forwarding to %s works again", task.destination)
            dest.down_since = None
            dest.alerted_at = None
            dest.last_success_at = now


async def failed(hub: Hub, task: ForwardTask, error: str, policy: RetryPolicy, *, sent: int = 0) -> str:
    """An attempt failed: retry later with backoff, or dead-letter after ``policy.max_attempts``. The first
    failure of a destination that was up raises the one alert of this outage. Returns the job's new state."""
    async with use_case(hub, None, "dicom.forward.failed", "dicom_forward_job", str(task.job_id)) as uow:
        session = uow.session
        now = hub.clock.now()
        job = await session.get(ForwardJob, task.job_id)
        if job is None:
            return "gone"
        job.attempts += 1
        job.last_error = error[:2000]
        job.updated_at = now
        job.lease_until = None
        job.instances_sent = max(job.instances_sent, sent)
        if job.attempts >= policy.max_attempts:
            job.state = "dead"
            job.done_at = now
            log.error("forwarding study %s to %s dead-lettered: %s", task.study_instance_uid, task.destination, error)
        else:
            job.state = "pending"
            job.next_attempt_at = now + timedelta(seconds=policy.delay(job.attempts))
        dest = await session.get(ForwardDestination, task.destination)
        if dest is None:
            dest = ForwardDestination(destination=task.destination, center_id=job.center_id)
            session.add(dest)
        dest.last_error = error[:2000]
        if dest.down_since is None:
            dest.down_since = now
            dest.alerted_at = now
            await emit(
                session,
                hub,
                "forwarding.destination_down",
                [f"worklist:{task.center_code}"],
                {"destination": task.destination, "center": task.center_code, "error": error[:500]},
            )
            log.warning("forwarding destination %s is down: %s", task.destination, error)
        return job.state


def _iso(value: Any) -> str | None:
    return value.isoformat() if value else None


async def list_jobs(hub: Hub, actor: Actor, *, state: str | None = None, limit: int = 100) -> dict[str, Any]:
    """The forwarding queue of the centers the actor coordinates (admins: the centers of their subtree)."""
    if actor.role not in (Role.COORDINATOR, Role.ADMIN):
        raise Forbidden("only coordinators and admins see the forwarding queue", code="role")
    if state is not None and state not in STATES:
        raise Invalid(f"state must be one of {', '.join(STATES)}", code="bad-parameter")
    async with read_use_case(hub, actor, "dicom.forwarding.read", "dicom_forward_job") as uow:
        session = uow.session
        query = (
            select(ForwardJob, Center.code, Institution.path, DicomStudy.study_instance_uid)
            .join(Center, Center.id == ForwardJob.center_id)
            .join(Institution, Institution.id == Center.institution_id)
            .join(DicomStudy, DicomStudy.id == ForwardJob.study_id)
            .order_by(ForwardJob.id.desc())
        )
        if state:
            query = query.where(ForwardJob.state == state)
        rows = (await session.execute(query.limit(limit * 4))).all()
        items = []
        for job, center_code, center_path, study_uid in rows:
            if not (
                center_code in actor.center_codes
                or (actor.role is Role.ADMIN and is_within(center_path, actor.institution_path))
            ):
                continue
            items.append(
                {
                    "id": job.id,
                    "state": job.state,
                    "center": center_code,
                    "destination": job.destination,
                    "study_instance_uid": study_uid,
                    "request_id": job.request_id,
                    "attempts": job.attempts,
                    "instances_sent": job.instances_sent,
                    "next_attempt_at": _iso(job.next_attempt_at) if job.state == "pending" else None,
                    "last_error": job.last_error,
                    "created_at": _iso(job.created_at),
                    "done_at": _iso(job.done_at),
                }
            )
            if len(items) >= limit:
                break
        dests = (await session.execute(select(ForwardDestination, Center.code).join(Center))).all()
        outages = [
            {"destination": d.destination, "center": code, "down_since": _iso(d.down_since), "last_error": d.last_error}
            for d, code in dests
            if d.down_since is not None and (code in actor.center_codes or actor.role is Role.ADMIN)
        ]
        uow.audit(object_path=actor.institution_path, detail={"count": len(items)})
        return {"items": items, "outages": outages}


async def replay(hub: Hub, actor: Actor, job_id: int) -> dict[str, Any]:
    """Put a dead-lettered forward back in the queue, due now with a fresh attempt budget: a coordinator of the
    center it goes to, or an admin of that center's subtree (audited with the attempts and error it had)."""
    if actor.role not in (Role.COORDINATOR, Role.ADMIN):
        raise Forbidden("only the destination center's coordinators and admins replay a forward", code="role")
    async with use_case(hub, actor, "dicom.forward.replay", "dicom_forward_job", str(job_id)) as uow:
        session = uow.session
        row = (
            await session.execute(
                select(ForwardJob, Center.code, Institution.path)
                .join(Center, Center.id == ForwardJob.center_id)
                .join(Institution, Institution.id == Center.institution_id)
                .where(ForwardJob.id == job_id)
            )
        ).one_or_none()
        if row is None:
            raise NotFound(f"no forwarding job {job_id}")
        job, center_code, center_path = row
        uow.audit(object_path=center_path)
        coordinates = actor.role is Role.COORDINATOR and center_code in actor.center_codes
        administers = actor.role is Role.ADMIN and is_within(center_path, actor.institution_path)
        if not (coordinates or administers):
            raise denied(
                Forbidden(f"the forward goes to {center_code}, not a center you coordinate", code="scope"), center_path
            )
        if job.state != "dead":
            raise Conflict(f"forwarding job {job_id} is {job.state}: only a dead letter is replayed", code="state")
        waiting = (
            await session.execute(
                select(ForwardJob.id).where(
                    ForwardJob.study_id == job.study_id,
                    ForwardJob.center_id == job.center_id,
                    ForwardJob.state.in_(("pending", "sending")),
                )
            )
        ).first()
        if waiting is not None:
            raise Conflict(f"job {waiting[0]} already forwards this study to {center_code}", code="already-queued")
        now = hub.clock.now()
        uow.audit(detail={"attempts": job.attempts, "last_error": job.last_error, "center": center_code})
        job.state = "pending"
        job.attempts = 0
        job.next_attempt_at = now
        job.lease_until = None
        job.done_at = None
        job.updated_at = now
        await emit(
            session,
            hub,
            "forwarding.replayed",
            [f"worklist:{center_code}"],
            {"job_id": job.id, "center": center_code, "by": actor.username},
        )
        return {"id": job.id, "state": job.state, "center": center_code, "next_attempt_at": _iso(now)}
