"""The practitioner registry (执业注册): title, practice-since date and licence number of each physician,
kept by an admin from the licence; it alone decides who may sign a final report (≥ 3 years of independent
practice), never the account's own fields."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from telenet.domain.access import MIN_YEARS_TO_SIGN, Actor, Role, years_of_practice
from telenet.domain.errors import Forbidden, Invalid, NotFound
from telenet.domain.tiers import is_within
from telenet.services.access import denied, require_role
from telenet.services.hub import Hub, use_case
from telenet.store.models import Institution, PractitionerRecord, User


async def upsert(
    session: AsyncSession,
    user_id: int,
    *,
    now: datetime,
    by: str,
    title: str | None = None,
    practice_since: date | None = None,
    licence_number: str | None = None,
) -> PractitionerRecord:
    """Create or change a record; fields given as None keep their value."""
    row = await session.get(PractitionerRecord, user_id)
    if row is None:
        row = PractitionerRecord(user_id=user_id, updated_at=now, updated_by=by)
        session.add(row)
    if title is not None:
        row.title = title
    if practice_since is not None:
        row.practice_since = practice_since
    if licence_number is not None:
        row.licence_number = licence_number
    row.updated_at = now
    row.updated_by = by
    return row


async def require_may_sign(session: AsyncSession, user_id: int, on: date, *, what: str = "a final report") -> None:
    """403 unless the registry records at least ``MIN_YEARS_TO_SIGN`` years of practice and a licence."""
    row = await session.get(PractitionerRecord, user_id)
    if row is None or row.practice_since is None:
        raise Forbidden(
            f"signing {what} needs a practitioner record (licence, practice-since) kept by an admin; "
            "you have none: save it as preliminary for a senior reader to sign",
            code="no-practitioner-record",
        )
    years = years_of_practice(row.practice_since, on)
    if years < MIN_YEARS_TO_SIGN:
        raise Forbidden(
            f"signing {what} needs {MIN_YEARS_TO_SIGN} years of independent practice; the registry records "
            f"{years}: save it as preliminary for a senior reader to sign",
            code="practice-years",
        )


def view(user: User, row: PractitionerRecord | None) -> dict[str, Any]:
    return {
        "username": user.username,
        "display_name": user.display_name,
        "title": row.title if row else None,
        "practice_since": row.practice_since.isoformat() if row and row.practice_since else None,
        "licence_number": row.licence_number if row else None,
        "updated_at": row.updated_at.isoformat() if row else None,
        "updated_by": row.updated_by if row else None,
    }


async def _user_in_scope(session: AsyncSession, actor: Actor, username: str) -> tuple[User, Institution]:
    found = (
        await session.execute(
            select(User, Institution)
            .join(Institution, Institution.id == User.institution_id)
            .where(User.username == username)
        )
    ).one_or_none()
    if found is None:
        raise NotFound(f"no account {username!r}")
    user, inst = found
    if not is_within(inst.path, actor.institution_path):
        raise denied(Forbidden(f"{username} is outside your institution's subtree", code="scope"), inst.path)
    return user, inst


async def put(hub: Hub, actor: Actor, username: str, body: dict[str, Any]) -> dict[str, Any]:
    """An admin records a physician's title, practice-since date and licence number (audited)."""
    require_role(actor, Role.ADMIN, action="maintain the practitioner registry")
    since = body.get("practice_since")
    try:
        practice_since = date.fromisoformat(since) if since else None
    except ValueError:
        raise Invalid("practice_since is a date YYYY-MM-DD", code="bad-date") from None
    async with use_case(hub, actor, "practitioner.put", "user", username) as uow:
        user, inst = await _user_in_scope(uow.session, actor, username)
        uow.audit(object_path=inst.path, detail={k: body.get(k) for k in ("title", "practice_since", "licence_number")})
        row = await upsert(
            uow.session,
            user.id,
            now=hub.clock.now(),
            by=actor.username,
            title=body.get("title"),
            practice_since=practice_since,
            licence_number=body.get("licence_number"),
        )
        await uow.session.flush()
        return view(user, row)


async def get(hub: Hub, actor: Actor, username: str) -> dict[str, Any]:
    require_role(actor, Role.ADMIN, Role.COORDINATOR, action="read the practitioner registry")
    async with use_case(hub, actor, "practitioner.read", "user", username) as uow:
        user, inst = await _user_in_scope(uow.session, actor, username)
        uow.audit(object_path=inst.path)
        return view(user, await uow.session.get(PractitionerRecord, user.id))
