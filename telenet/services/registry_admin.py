"""Admins change the registry through the API: institutions, centers (hours, SLA, capacity), agreements and
accounts. Nothing is overwritten: each change is a new revision (``registry_revisions``) with its validity
period, the previous one is closed at the moment the new one takes effect, and the live row holds the
revision in force. A change may be scheduled (``effective_from`` later than now): routing (the registry
snapshot) uses it from that moment, and the sweeper writes it into the live row then. Every change bumps the
registry version, so every hub process reloads its snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from telenet.domain.access import Actor, Role
from telenet.domain.errors import Conflict, Forbidden, Invalid, NotFound
from telenet.domain.tiers import is_within
from telenet.services.access import denied, require_role
from telenet.services.hub import Hub, UnitOfWork, read_use_case, use_case
from telenet.services.registry_snapshot import bump_version
from telenet.services.registry_state import FIELDS, apply_state, state_of
from telenet.store.auth_version import mark_revoked
from telenet.store.models import (
    Agreement,
    Center,
    Institution,
    Network,
    NetworkMember,
    RegistryRevision,
    User,
    UserCenter,
)

KINDS = ("institution", "center", "agreement", "account")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Target:
    """The live row a change is about, with what identifies it in the history."""

    kind: str
    row: Any
    key: str
    path: str
    since: datetime


def _patch_of(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The body of a PATCH as versioned columns (endpoints and nodes flattened)."""
    patch = {k: v for k, v in body.items() if k not in ("effective_from", "reason", "hl7_destination", "dicom_node")}
    if kind == "institution" and "hl7_destination" in body:
        dest = body["hl7_destination"] or {}
        patch.update(hl7_host=dest.get("host"), hl7_port=dest.get("port"))
    if kind == "center" and "dicom_node" in body:
        node = body["dicom_node"] or {}
        patch.update(dicom_ae_title=node.get("ae_title"), dicom_host=node.get("host"), dicom_port=node.get("port"))
    if kind == "account" and "centers" in patch:
        patch["centers"] = sorted(patch["centers"])
    if kind == "center" and "sla_minutes" in patch:
        patch["sla_minutes"] = dict(patch["sla_minutes"])
    return patch


def _effective(hub: Hub, body: Mapping[str, Any]) -> datetime:
    now = hub.clock.now()
    raw = body.get("effective_from")
    if raw is None:
        return now
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        raise Invalid("effective_from must be an ISO 8601 time", code="bad-effective-from") from None
    if at.tzinfo is None:
        raise Invalid("effective_from needs a UTC offset (e.g. 2026-03-09T00:00:00+08:00)", code="bad-effective-from")
    if at < now:
        raise Invalid(
            "effective_from is in the past: the registry's history is never rewritten; a change takes effect now "
            "or later",
            code="effective-in-the-past",
        )
    return at.astimezone(UTC)


async def _revisions(session: AsyncSession, kind: str, object_id: int) -> list[RegistryRevision]:
    return list(
        (
            await session.execute(
                select(RegistryRevision)
                .where(RegistryRevision.kind == kind, RegistryRevision.object_id == object_id)
                .order_by(RegistryRevision.revision)
            )
        ).scalars()
    )


async def revise(
    uow: UnitOfWork,
    actor: Actor,
    target: Target,
    current: dict[str, Any],
    patch: Mapping[str, Any],
    *,
    at: datetime,
    reason: str | None,
) -> RegistryRevision | None:
    """Write the revision ``patch`` makes of ``target`` in force from ``at``, closing the one before it; None
    when it changes nothing (a repeated PATCH is no new version). The caller applies it to the live row when
    it is in force now."""
    hub, session = uow.hub, uow.session
    now = hub.clock.now()
    history = await _revisions(session, target.kind, target.row.id)
    latest = history[-1] if history else None
    if latest is not None and latest.valid_from > at:
        raise Conflict(
            f"a change of {target.key} is scheduled from {latest.valid_from.isoformat()}: a new change takes "
            "effect at that time or later",
            code="change-scheduled",
        )
    base = dict(latest.data) if latest is not None else current
    state = {**base, **patch}
    changed = sorted(k for k in state if state[k] != base.get(k))
    if not changed:
        return None
    common = {"kind": target.kind, "object_id": target.row.id, "object_key": target.key, "object_path": target.path}
    if latest is None:  # the state before the first change is the first version, so the history is whole
        session.add(
            RegistryRevision(
                **common, revision=1, valid_from=min(target.since, at), valid_to=at, data=current, changed=None,
                changed_at=now, changed_by="registry", reason="the record before its first change",
            )
        )  # fmt: skip
    else:
        latest.valid_to = at
    revision = RegistryRevision(
        **common,
        revision=(latest.revision if latest is not None else 1) + 1,
        valid_from=at,
        valid_to=None,
        data=state,
        changed=changed,
        changed_at=now,
        changed_by=actor.username,
        reason=reason,
    )
    session.add(revision)
    await session.flush()
    uow.audit(
        object_path=target.path,
        detail={
            "revision": revision.revision,
            "changed": {k: state[k] for k in changed},
            "effective_from": at.isoformat(),
            "reason": reason,
        },
    )
    await bump_version(session, now)  # every hub process reloads its registry snapshot
    return revision


def _check_scope(actor: Actor, path: str, what: str) -> None:
    if not is_within(path, actor.institution_path):
        raise denied(Forbidden(f"{what} is outside your institution's subtree", code="scope"), path)


async def _institution(session: AsyncSession, actor: Actor, code: str) -> Target:
    inst = (await session.execute(select(Institution).where(Institution.code == code))).scalar_one_or_none()
    if inst is None:
        raise NotFound(f"no institution {code!r}")
    _check_scope(actor, inst.path, code)
    return Target("institution", inst, inst.code, inst.path, inst.created_at)


async def _center(session: AsyncSession, actor: Actor, code: str) -> Target:
    row = (
        await session.execute(
            select(Center, Institution.path)
            .join(Institution, Institution.id == Center.institution_id)
            .where(Center.code == code)
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"no center {code!r}")
    center, path = row
    _check_scope(actor, path, code)
    return Target("center", center, center.code, path, _EPOCH)


async def _network(session: AsyncSession, actor: Actor, code: str) -> tuple[Network, str]:
    row = (
        await session.execute(
            select(Network, Institution.path)
            .join(Institution, Institution.id == Network.lead_id)
            .where(Network.code == code)
        )
    ).one_or_none()
    if row is None:
        raise NotFound(f"no network {code!r}")
    network, lead_path = row
    _check_scope(actor, lead_path, f"network {code} (its lead)")
    return network, lead_path


async def _member(session: AsyncSession, network: Network, member: str) -> Institution:
    inst = (await session.execute(select(Institution).where(Institution.code == member))).scalar_one_or_none()
    if inst is None:
        raise Invalid(f"no institution {member!r}", code="unknown-member")
    is_member = (
        await session.execute(
            select(NetworkMember.institution_id).where(
                NetworkMember.network_id == network.id, NetworkMember.institution_id == inst.id
            )
        )
    ).first()
    if is_member is None:
        raise Invalid(f"{member} is not a member of network {network.code}", code="not-a-member")
    return inst


def _check_dates(state: Mapping[str, Any]) -> None:
    if state["valid_from"] > state["valid_to"]:
        raise Invalid("valid_from is after valid_to", code="bad-dates")


async def _done(uow: UnitOfWork, hub: Hub, target: Target, revision: RegistryRevision | None) -> dict[str, Any]:
    await uow.commit()
    if hub.registry is not None:
        hub.registry.invalidate()
    return {
        "kind": target.kind,
        "key": target.key,
        "revision": revision.revision if revision is not None else None,
        "effective_from": revision.valid_from.isoformat() if revision is not None else None,
        "changed": revision.changed if revision is not None else [],
        "in_force": revision is None or revision.valid_from <= hub.clock.now(),
    }


async def change_institution(hub: Hub, actor: Actor, code: str, body: Mapping[str, Any]) -> dict[str, Any]:
    require_role(actor, Role.ADMIN, action="change the registry")
    at = _effective(hub, body)
    async with use_case(hub, actor, "institution.change", "institution", code) as uow:
        target = await _institution(uow.session, actor, code)
        patch = _patch_of("institution", body)
        if patch.get("hl7_facility"):
            taken = (
                await uow.session.execute(
                    select(Institution.code).where(
                        Institution.hl7_facility == patch["hl7_facility"], Institution.id != target.row.id
                    )
                )
            ).scalar_one_or_none()
            if taken is not None:
                raise Conflict(f"HL7 facility {patch['hl7_facility']!r} belongs to {taken}", code="facility-taken")
        revision = await revise(
            uow, actor, target, state_of("institution", target.row), patch, at=at, reason=body.get("reason")
        )
        if revision is not None and at <= hub.clock.now():
            apply_state("institution", target.row, revision.data)
            target.row.updated_at = hub.clock.now()
        return await _done(uow, hub, target, revision)


async def change_center(hub: Hub, actor: Actor, code: str, body: Mapping[str, Any]) -> dict[str, Any]:
    require_role(actor, Role.ADMIN, action="change the registry")
    at = _effective(hub, body)
    async with use_case(hub, actor, "center.change", "center", code) as uow:
        target = await _center(uow.session, actor, code)
        revision = await revise(
            uow,
            actor,
            target,
            state_of("center", target.row),
            _patch_of("center", body),
            at=at,
            reason=body.get("reason"),
        )
        if revision is not None and at <= hub.clock.now():
            apply_state("center", target.row, revision.data)
        return await _done(uow, hub, target, revision)


async def change_agreement(
    hub: Hub, actor: Actor, network_code: str, member: str, body: Mapping[str, Any]
) -> dict[str, Any]:
    require_role(actor, Role.ADMIN, action="change the registry")
    at = _effective(hub, body)
    async with use_case(hub, actor, "agreement.change", "agreement", f"{network_code}/{member}") as uow:
        network, lead_path = await _network(uow.session, actor, network_code)
        inst = await _member(uow.session, network, member)
        agreement = (
            await uow.session.execute(
                select(Agreement).where(Agreement.network_id == network.id, Agreement.member_id == inst.id)
            )
        ).scalar_one_or_none()
        if agreement is None:
            raise NotFound(f"network {network_code} has no agreement with {member}: POST one")
        target = Target("agreement", agreement, f"{network_code}/{member}", lead_path, _EPOCH)
        current = state_of("agreement", agreement)
        patch = _patch_of("agreement", body)
        _check_dates({**current, **patch})
        revision = await revise(uow, actor, target, current, patch, at=at, reason=body.get("reason"))
        if revision is not None and at <= hub.clock.now():
            apply_state("agreement", agreement, revision.data)
        return await _done(uow, hub, target, revision)


async def create_agreement(hub: Hub, actor: Actor, network_code: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """A new agreement with a member that has none in this network (an ended one is renewed by PATCH)."""
    require_role(actor, Role.ADMIN, action="change the registry")
    at = _effective(hub, body)
    if body["valid_from"] > body["valid_to"]:
        raise Invalid("valid_from is after valid_to", code="bad-dates")
    async with use_case(hub, actor, "agreement.create", "agreement", f"{network_code}/{body['member']}") as uow:
        network, lead_path = await _network(uow.session, actor, network_code)
        inst = await _member(uow.session, network, body["member"])
        existing = (
            await uow.session.execute(
                select(Agreement.id).where(Agreement.network_id == network.id, Agreement.member_id == inst.id)
            )
        ).scalar_one_or_none()
        if existing is not None:
            raise Conflict(
                f"network {network_code} has an agreement with {inst.code}: PATCH it (its history is kept)",
                code="agreement-exists",
            )
        agreement = Agreement(network_id=network.id, member_id=inst.id, lead_id=network.lead_id)
        apply_state("agreement", agreement, _patch_of("agreement", {k: v for k, v in body.items() if k != "member"}))
        uow.session.add(agreement)
        await uow.session.flush()
        now = hub.clock.now()
        revision = RegistryRevision(
            kind="agreement", object_id=agreement.id, object_key=f"{network_code}/{inst.code}", object_path=lead_path,
            revision=1, valid_from=at, valid_to=None, data=state_of("agreement", agreement),
            changed=list(FIELDS["agreement"]), changed_at=now, changed_by=actor.username, reason=body.get("reason"),
        )  # fmt: skip
        uow.session.add(revision)
        await uow.session.flush()
        uow.audit(object_path=lead_path, detail={"revision": 1, "agreement": revision.data})
        await bump_version(uow.session, now)
        target = Target("agreement", agreement, revision.object_key, lead_path, at)
        return await _done(uow, hub, target, revision)


async def change_account(hub: Hub, actor: Actor, username: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """Role, centers, name, title or active; the account's tokens see the change at once (auth epoch)."""
    require_role(actor, Role.ADMIN, action="change the registry")
    at = _effective(hub, body)
    async with use_case(hub, actor, "account.change", "user", username) as uow:
        session = uow.session
        row = (
            await session.execute(
                select(User, Institution.path)
                .join(Institution, Institution.id == User.institution_id)
                .where(User.username == username)
            )
        ).one_or_none()
        if row is None:
            raise NotFound(f"no account {username!r}")
        user, path = row
        _check_scope(actor, path, username)
        if user.id == actor.user_id and ("role" in body or body.get("active") is False):
            raise Forbidden("an admin does not change their own role or disable their own account", code="self")
        wanted = body.get("centers")
        center_ids: dict[str, int] = {}
        if wanted is not None:
            rows = (
                await session.execute(
                    select(Center.code, Center.id, Institution.path)
                    .join(Institution, Institution.id == Center.institution_id)
                    .where(Center.code.in_(wanted))
                )
            ).all()
            center_ids = {code: cid for code, cid, _ in rows}
            unknown = sorted(set(wanted) - set(center_ids))
            if unknown:
                raise Invalid(f"no center {', '.join(unknown)}", code="unknown-center")
            for code, _, center_path in rows:
                _check_scope(actor, center_path, f"center {code}")
        linked = (
            await session.execute(
                select(Center.code, Center.id)
                .join(UserCenter, UserCenter.center_id == Center.id)
                .where(UserCenter.user_id == user.id)
            )
        ).all()
        target = Target("account", user, user.username, path, user.created_at)
        current = state_of("account", user, [code for code, _ in linked])
        revision = await revise(
            uow, actor, target, current, _patch_of("account", body), at=at, reason=body.get("reason")
        )
        if revision is not None and at <= hub.clock.now():
            await apply_account(session, user, revision.data)
        return await _done(uow, hub, target, revision)


async def apply_account(session: AsyncSession, user: User, state: Mapping[str, Any]) -> None:
    apply_state("account", user, state)
    ids = (await session.execute(select(Center.id).where(Center.code.in_(state.get("centers") or [])))).scalars()
    await session.execute(delete(UserCenter).where(UserCenter.user_id == user.id))
    rows = [{"user_id": user.id, "center_id": cid} for cid in ids]
    if rows:
        await session.execute(insert(UserCenter), rows)
    user.auth_epoch = (user.auth_epoch or 0) + 1  # its tokens are checked again with the new scope
    mark_revoked(session)  # and every process's token cache drops what it knew of them at the commit


@dataclass
class LoadHistory:
    """The versions a network file load writes: every record it changes gets a new revision as an admin's
    change would (the record before it first, when it has no history yet), so a later change through the API
    starts from what the file set. A change of a record with a change scheduled later is refused (the file
    would be undone when that change comes into force)."""

    now: datetime
    by: str
    # (kind, object id, key, institution id of its path, before, after, location in the file)
    entries: list[tuple[str, int, str, int, dict[str, Any], dict[str, Any], str]] = field(default_factory=list)

    def changed(
        self, kind: str, object_id: int, key: str, institution_id: int, before: dict[str, Any], after: dict[str, Any],
        location: str,
    ) -> None:  # fmt: skip
        if before != after:
            self.entries.append((kind, object_id, key, institution_id, before, after, location))

    async def write(self, session: AsyncSession) -> None:
        if not self.entries:
            return
        open_rows: dict[tuple[str, int], RegistryRevision] = {}
        for kind in {e[0] for e in self.entries}:
            ids = [e[1] for e in self.entries if e[0] == kind]
            for chunk in range(0, len(ids), 500):
                for r in (
                    await session.execute(
                        select(RegistryRevision).where(
                            RegistryRevision.kind == kind,
                            RegistryRevision.valid_to.is_(None),
                            RegistryRevision.object_id.in_(ids[chunk : chunk + 500]),
                        )
                    )
                ).scalars():
                    open_rows[(kind, r.object_id)] = r
        scheduled = [
            {"location": e[6], "message": f"{e[2]} has a change scheduled from {pending.valid_from.isoformat()}"}
            for e in self.entries
            if (pending := open_rows.get((e[0], e[1]))) is not None and pending.valid_from > self.now
        ]
        if scheduled:
            raise Invalid(
                f"the network file changes {len(scheduled)} record(s) with a change scheduled later",
                code="bad-network-file",
                details=scheduled,
            )
        inst_ids = sorted({e[3] for e in self.entries})
        paths: dict[int, str] = {}
        for chunk in range(0, len(inst_ids), 500):
            rows = await session.execute(
                select(Institution.id, Institution.path).where(Institution.id.in_(inst_ids[chunk : chunk + 500]))
            )
            paths.update({i: p for i, p in rows.all()})
        for kind, object_id, key, inst_id, before, after, _ in self.entries:
            latest = open_rows.get((kind, object_id))
            common = {"kind": kind, "object_id": object_id, "object_key": key, "object_path": paths.get(inst_id)}
            if latest is None:
                session.add(
                    RegistryRevision(
                        **common, revision=1, valid_from=_EPOCH, valid_to=self.now, data=before, changed=None,
                        changed_at=self.now, changed_by="registry", reason="the record before its first change",
                    )
                )  # fmt: skip
            else:
                latest.valid_to = self.now
            session.add(
                RegistryRevision(
                    **common, revision=(latest.revision if latest is not None else 1) + 1, valid_from=self.now,
                    valid_to=None, data=after, changed=sorted(k for k in after if after[k] != before.get(k)),
                    changed_at=self.now, changed_by=self.by, reason="network file",
                )
            )  # fmt: skip
        await session.flush()


_MODELS: Mapping[str, Any] = {"institution": Institution, "center": Center, "agreement": Agreement, "account": User}


async def apply_due(hub: Hub) -> int:
    """Write every scheduled revision that is now in force into its live row (a sweeper step; idempotent:
    a row already holding the revision's state is left alone)."""
    now = hub.clock.now()
    applied = 0
    async with hub.reader() as reader:  # most sweeps find nothing: no write transaction for them
        scheduled = (
            await reader.execute(
                select(RegistryRevision.id)
                .where(
                    RegistryRevision.valid_to.is_(None),
                    RegistryRevision.valid_from <= now,
                    RegistryRevision.valid_from > RegistryRevision.changed_at,
                )
                .limit(1)
            )
        ).first()
    if scheduled is None:
        return 0
    async with use_case(hub, None, "registry.apply_due", "registry") as uow:
        session = uow.session
        due = (
            await session.execute(
                select(RegistryRevision)
                .where(
                    RegistryRevision.valid_to.is_(None),
                    RegistryRevision.valid_from <= now,
                    RegistryRevision.valid_from > RegistryRevision.changed_at,
                )
                .order_by(RegistryRevision.id)
            )
        ).scalars()
        for revision in due:
            row = await session.get(_MODELS[revision.kind], revision.object_id)
            if row is None:
                continue
            if revision.kind == "account":
                linked = (
                    await session.execute(
                        select(Center.code)
                        .join(UserCenter, UserCenter.center_id == Center.id)
                        .where(UserCenter.user_id == row.id)
                    )
                ).scalars()
                if state_of("account", row, list(linked)) != revision.data:
                    await apply_account(session, row, revision.data)
                    applied += 1
            elif state_of(revision.kind, row) != revision.data:
                apply_state(revision.kind, row, revision.data)
                applied += 1
        if applied:
            await bump_version(session, now)
    if applied and hub.registry is not None:
        hub.registry.invalidate()
    return applied


def revision_view(r: RegistryRevision) -> dict[str, Any]:
    return {
        "revision": r.revision,
        "valid_from": r.valid_from.isoformat(),
        "valid_to": r.valid_to.isoformat() if r.valid_to else None,
        "data": r.data,
        "changed": r.changed,
        "changed_at": r.changed_at.isoformat(),
        "changed_by": r.changed_by,
        "reason": r.reason,
    }


async def _path_of(session: AsyncSession, kind: str, key: str) -> str | None:
    """The institution path a registry record belongs to (an agreement: its network's lead)."""
    if kind == "institution":
        query = select(Institution.path).where(Institution.code == key)
    elif kind == "center":
        query = select(Institution.path).join(Center, Center.institution_id == Institution.id).where(Center.code == key)
    elif kind == "account":
        query = select(Institution.path).join(User, User.institution_id == Institution.id).where(User.username == key)
    else:
        network = key.split("/", 1)[0]
        query = select(Institution.path).join(Network, Network.lead_id == Institution.id).where(Network.code == network)
    return (await session.execute(query)).scalar_one_or_none()


async def history(hub: Hub, actor: Actor, kind: str, key: str) -> dict[str, Any]:
    """Every version of one registry record, oldest first (admins of its subtree); empty before its first
    change."""
    require_role(actor, Role.ADMIN, action="read the registry's history")
    if kind not in KINDS:
        raise Invalid(f"kind must be one of {', '.join(KINDS)}", code="bad-parameter")
    async with read_use_case(hub, actor, "registry.history", kind, key) as uow:
        path = await _path_of(uow.session, kind, key)
        if path is None:
            raise NotFound(f"no {kind} {key!r}")
        uow.audit(object_path=path)
        _check_scope(actor, path, key)
        rows = list(
            (
                await uow.session.execute(
                    select(RegistryRevision)
                    .where(RegistryRevision.kind == kind, RegistryRevision.object_key == key)
                    .order_by(RegistryRevision.revision)
                )
            ).scalars()
        )
        uow.audit(detail={"count": len(rows)})
        return {"kind": kind, "key": key, "items": [revision_view(r) for r in rows]}
