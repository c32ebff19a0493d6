"""What an inbound HL7 message does: it acts as its sending facility's integration account through the same
use cases (and scope checks) as REST, once per (facility, MSH-10), with the ACK stored in the transaction of
its effect; unparseable input is kept as a dead letter for an admin to replay.

Protocol-free: the gateway parses and maps the message (:class:`InboundCommand`) and builds ACKs (the
``ack`` callback); nothing here knows HL7 syntax.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from telenet.domain.access import Actor, Role
from telenet.domain.errors import Conflict, Forbidden, Invalid, NotFound, TelenetError
from telenet.domain.patients import mask_national_ids
from telenet.schemas import validate
from telenet.services import order_control, patient_merge, requests
from telenet.services.access import require_role
from telenet.services.group_commit import joined_hub
from telenet.services.hub import Hub, read_use_case, use_case
from telenet.store.models import HL7DeadLetter, HL7InboundMessage, HL7OutboxItem, Institution, Request, User

log = logging.getLogger(__name__)

Action = Literal["patient", "order", "cancel", "change", "discontinue", "merge", "orders", "refuse"]


@dataclass(frozen=True)
class InboundCommand:
    """A parsed inbound message in service terms.

    ``patient`` is :func:`requests.upsert_patient` data, ``order`` a ``POST /api/v1/requests`` body,
    ``order_info`` what the result message must echo later (placer order number, procedure, name parts).
    ``refuse`` is a message the gateway already refused (valid HL7, not acceptable): it is only logged, so a
    re-send gets the same answer.
    """

    facility: str
    message_control_id: str
    message_type: str
    action: Action
    patient: dict[str, Any] | None = None
    order: dict[str, Any] | None = None
    accession_number: str | None = None
    order_info: dict[str, Any] | None = None
    #: XO: the new values; DC: ``{"reason": ..., "policy": "return" | "refuse"}``; A40: ``{"prior_id": ...}``.
    changes: dict[str, Any] | None = None
    placer_order_number: str | None = None
    filler_order_number: str | None = None
    study_instance_uid: str | None = None
    #: Several ORC groups: one command each, all applied or none.
    parts: tuple[InboundCommand, ...] = ()
    #: The facility's HIS wants ORR^O02 / ORI^O24 rather than an ACK (set by the service from the registry).
    ack_mode: str = "ack"


class GroupFailed(TelenetError):
    """Order group ``group`` (1-based) of a multi-order message was refused: none of the groups took effect."""

    def __init__(self, group: int, cause: TelenetError) -> None:
        super().__init__(f"order group {group}: {cause.message}", code=cause.code, details=cause.details)
        self.group = group
        self.cause = cause


#: Builds the ACK for the message given the error its effect raised (None: it took effect, or it is a
#: refusal decided by the gateway), a note for the sender (MSA-3 of an AA, e.g. that consent is
#: missing) and the facility's acknowledgement mode ("ack", or "orr" for the order response message);
#: returns (MSA-1 code, ACK bytes).
AckFor = Callable[[TelenetError | None, str | None, str], Awaitable[tuple[str, bytes]]]

CONSENT_MISSING_NOTE = "consent (知情同意) missing: the request waits in ordered until it is recorded"


@dataclass(frozen=True)
class InboundResult:
    ack_code: str
    ack: bytes
    duplicate: bool = False
    request_id: int | None = None
    error: TelenetError | None = None
    note: str | None = None


@dataclass(frozen=True)
class ReplayOutcome:
    """What re-running an inbound dead letter through the gateway gave: the ACK code and why."""

    ack_code: str
    text: str | None = None


class InboundReplayer(Protocol):
    async def __call__(self, raw: bytes, peer: str | None) -> ReplayOutcome: ...


@dataclass(frozen=True)
class _Sender:
    institution: Institution
    integration: User | None

    def actor(self, peer: str | None) -> Actor:
        """The institution's integration account as the actor (integration accounts have no centers)."""
        user = self.integration
        if user is None:
            raise Forbidden(
                f"institution {self.institution.code} has no active integration account for HL7 to act as",
                code="no-integration-account",
            )
        return Actor(
            user_id=user.id,
            username=user.username,
            role=Role(user.role),
            institution_id=self.institution.id,
            institution_code=self.institution.code,
            institution_path=self.institution.path,
            title=user.title,
            practice_since=user.practice_since,
            display_name=user.display_name,
            remote_addr=peer,
        )


async def _sender(session: AsyncSession, facility: str) -> _Sender | None:
    integration = and_(
        User.institution_id == Institution.id, User.role == Role.INTEGRATION.value, User.active.is_(True)
    )
    row = (
        await session.execute(
            select(Institution, User)
            .outerjoin(User, integration)
            .where(Institution.hl7_facility == facility)
            .order_by(User.id)
            .limit(1)
        )
    ).one_or_none()
    return None if row is None else _Sender(row[0], row[1])


async def _stored(session: AsyncSession, facility: str, control_id: str) -> InboundResult | None:
    row = (
        await session.execute(
            select(HL7InboundMessage).where(
                HL7InboundMessage.facility == facility,
                HL7InboundMessage.message_control_id == control_id,
                HL7InboundMessage.message_type != ORDER_GROUP_ROW,
            )
        )
    ).scalar_one_or_none()
    if row is None:
        return None
    return InboundResult(row.ack_code, row.ack, duplicate=True, request_id=row.request_id)


@dataclass
class _Transaction:
    session: AsyncSession
    hub: Hub
    wake: list[bool]


@asynccontextmanager
async def _one_transaction(hub: Hub) -> AsyncIterator[_Transaction]:
    """A session that owns one transaction, and a hub whose use cases run inside it as savepoints: their
    ``commit`` releases a savepoint, their rollback undoes only their part, and nothing is durable until the
    owner commits. Their wake-ups (for emitted events) are held back until then: ``wake``."""
    if hub.group_commit is not None:
        # Concurrent connections share one transaction: this message's session is a savepoint of it, and the
        # group's commit (durable) comes before this block ends, so before the ACK is sent.
        async with hub.group_commit.member() as (connection, group_wake):
            savepoint = async_sessionmaker(
                bind=connection, expire_on_commit=False, autoflush=False, join_transaction_mode="create_savepoint"
            )
            async with savepoint() as session:
                yield _Transaction(session, joined_hub(hub, connection, group_wake), [])
        return
    async with hub.sessions() as session:
        connection = await session.connection()
        joined = async_sessionmaker(
            bind=connection, expire_on_commit=False, autoflush=False, join_transaction_mode="create_savepoint"
        )
        wake: list[bool] = []
        yield _Transaction(
            session,
            dataclasses.replace(hub, sessions=joined, read_sessions=joined, on_commit=[lambda: wake.append(True)]),
            wake,
        )


async def process(hub: Hub, command: InboundCommand, *, peer: str | None, ack: AckFor) -> InboundResult:
    """Run one inbound message once, in one transaction with its log row and ACK. A re-sent (facility, MSH-10)
    gets the stored ACK and changes nothing; a message from an unregistered facility, or one without an
    integration account, is refused and not logged (the registry may be fixed and the message sent again)."""
    error: TelenetError | None = None
    # The sender and a stored ACK are reads: on a read session, before the write transaction (on SQLite, before
    # the write lock and the group's queue). A refused or re-sent message never enters the write queue; a copy
    # stored meanwhile by another connection is caught by the log row's unique key below.
    async with hub.reader() as reading:
        sender = await _sender(reading, command.facility)
        stored = await _stored(reading, command.facility, command.message_control_id) if sender else None
    try:
        if sender is None:
            raise NotFound(
                f"sending facility {command.facility!r} (MSH-4) is not registered to any institution",
                code="unknown-facility",
            )
        actor = sender.actor(peer)
    except TelenetError as exc:
        # Registry problems are not the message's: nothing is logged, a re-send after the fix goes through.
        code, data = await ack(exc, None, "ack")
        return InboundResult(code, data, error=exc)
    if stored is not None:
        return stored
    async with _one_transaction(hub) as transaction:
        session, joined = transaction.session, transaction.hub
        row = HL7InboundMessage(
            facility=command.facility,
            message_control_id=command.message_control_id,
            message_type=command.message_type[:16],
            institution_id=actor.institution_id,
            received_at=hub.clock.now(),
            peer=peer,
            ack_code="--",
            ack=b"",
        )
        session.add(row)
        try:
            await session.flush()
        except IntegrityError:
            # The same message, sent again while the first copy was being processed: its ACK is stored now,
            # in this transaction (a copy earlier in the same group) or in one committed since the read above.
            await session.rollback()
            stored = await _stored(session, command.facility, command.message_control_id)
            if stored is None:
                async with hub.reader() as again:
                    stored = await _stored(again, command.facility, command.message_control_id)
            if stored is None:
                raise
            return stored
        request_id: int | None = None
        note: str | None = None
        try:
            if command.action == "orders":
                # One savepoint around every group: a message whose group n fails leaves none of them.
                async with session.begin_nested():
                    request_id, note = await _effect(joined, session, actor, command)
            else:
                request_id, note = await _effect(joined, session, actor, command)
        except TelenetError as exc:
            error = exc
        code, data = await ack(error, note, sender.institution.hl7_ack_mode or "ack")
        row.ack_code = code
        row.ack = data
        row.error = f"{error.code}: {error.message}" if error else None
        row.request_id = request_id
        # Left unset (SQL NULL, not JSON null) unless the message is an accepted order: the ORU and the status
        # messages look the order up by ``order_info IS NOT NULL``.
        order_command = command.parts[0] if command.action == "orders" else command
        if error is None and order_command.action == "order" and order_command.order_info is not None:
            row.order_info = order_command.order_info
        await session.commit()
    if transaction.wake:
        hub.notify_committed()
    return InboundResult(code, data, request_id=request_id, error=error, note=note)


async def _effect(
    hub: Hub, session: AsyncSession, actor: Actor, command: InboundCommand
) -> tuple[int | None, str | None]:
    """The use case the message asks for; returns the request it concerns, if any, and a note for the ACK."""
    if command.action == "orders":
        first_id: int | None = None
        notes: list[str] = []
        for n, part in enumerate(command.parts, start=1):
            try:
                request_id, note = await _effect(hub, session, actor, part)
            except TelenetError as exc:
                raise GroupFailed(n, exc) from exc
            first_id = first_id or request_id
            if note:
                notes.append(f"order group {n}: {note}")
        return first_id, "; ".join(notes) or None
    if command.action == "patient":
        assert command.patient is not None
        await register_patient(hub, actor, command.patient, command.message_control_id)
        return None, None
    if command.action == "merge":
        assert command.patient is not None and command.changes is not None
        await patient_merge.merge(hub, actor, command.patient, command.changes["prior_id"], command.message_control_id)
        return None, None
    if command.action == "order":
        assert command.order is not None
        validate("api/request-create", command.order)
        # An HL7 order may come without consent: it is accepted and waits in ordered until consent is recorded.
        view = await requests.submit(hub, actor, command.order, consent_optional=True)
        await order_control.record_order_numbers(
            session,
            int(view["id"]),
            command.placer_order_number,
            command.filler_order_number,
            command.study_instance_uid,
        )
        # The hub's own ORM/OMI log row for this request, so status messages and the ORU echo the order.
        if command.order_info is not None:
            await _order_info_row(session, hub, actor, command, int(view["id"]))
        return int(view["id"]), None if "consent" in command.order else CONSENT_MISSING_NOTE
    if command.action == "refuse" or command.accession_number is None:
        return None, None
    request_id = await request_by_accession(hub, command.accession_number)
    source = f"ORC-1 {_CONTROL[command.action]}, message {command.message_control_id}"
    if command.action == "cancel":
        await requests.cancel(hub, actor, request_id, f"cancelled by the HIS ({source})")
    elif command.action == "change":
        await order_control.change(hub, actor, request_id, command.changes or {}, source)
    elif command.action == "discontinue":
        changes = command.changes or {}
        await order_control.discontinue(
            hub, actor, request_id, changes.get("reason"), source, changes.get("policy", "return")
        )
    return request_id, None


_CONTROL = {"cancel": "CA", "change": "XO", "discontinue": "DC"}
#: ``message_type`` of the log rows that hold the order info of groups 2..n (never an idempotency answer).
ORDER_GROUP_ROW = "order-group"


async def _order_info_row(
    session: AsyncSession, hub: Hub, actor: Actor, command: InboundCommand, request_id: int
) -> None:
    """Groups after the first of a multi-order message get a log row of their own (key: MSH-10 + the group's
    accession number), so that each request finds what its ORU and status messages must echo."""
    if not command.message_control_id.endswith(f"#{command.accession_number}"):
        return
    session.add(
        HL7InboundMessage(
            facility=command.facility,
            message_control_id=command.message_control_id[:199],
            message_type=ORDER_GROUP_ROW,
            institution_id=actor.institution_id,
            received_at=hub.clock.now(),
            ack_code="AA",
            ack=b"",
            request_id=request_id,
            order_info=command.order_info,
        )
    )
    await session.flush()


async def register_patient(hub: Hub, actor: Actor, data: dict[str, Any], message_control_id: str) -> int:
    """ADT A04/A08: the institution's patient by HIS id, created or updated."""
    require_role(actor, Role.INTEGRATION, Role.REQUESTER, action="register patients")
    async with use_case(hub, actor, "patient.upsert", "patient") as uow:
        uow.audit(object_path=actor.institution_path)
        patient = await requests.upsert_patient(hub, uow.session, actor.institution_id, data)
        uow.audit(object_id=str(patient.id), detail={"source": "hl7", "message_control_id": message_control_id})
        return patient.id


async def request_by_accession(hub: Hub, accession_number: str) -> int:
    """The id of the request with this accession number; the use case that acts on it checks the scope."""
    async with hub.sessions() as session:
        request_id = (
            await session.execute(select(Request.id).where(Request.accession_number == accession_number))
        ).scalar_one_or_none()
    if request_id is None:
        raise NotFound(f"no request has accession number {accession_number}", code="unknown-accession")
    return int(request_id)


# ---------------------------------------------------------------------------------------------- dead letters


async def record_dead_letter(
    hub: Hub,
    *,
    raw: bytes,
    reason: str,
    peer: str | None,
    facility: str | None = None,
    message_control_id: str | None = None,
) -> int:
    """Keep an inbound message that could not be parsed, for inspection and replay; national id numbers in
    it (and in the reason) are kept masked only."""
    raw = mask_national_ids(raw)
    reason = mask_national_ids(reason.encode("utf-8", "replace")).decode("utf-8", "replace")
    async with hub.sessions() as session:
        inst = None
        if facility:
            inst = (
                await session.execute(select(Institution).where(Institution.hl7_facility == facility))
            ).scalar_one_or_none()
        letter = HL7DeadLetter(
            direction="inbound",
            raw=raw,
            reason=reason,
            received_at=hub.clock.now(),
            peer=peer[:64] if peer else None,
            facility=facility[:64] if facility else None,
            message_control_id=message_control_id[:199] if message_control_id else None,
            institution_id=inst.id if inst else None,
            institution_path=inst.path if inst else None,
            replays=0,
        )
        session.add(letter)
        await session.commit()
        log.warning("hl7: dead letter %s from %s: %s", letter.id, peer, reason)
        return letter.id


async def _require_admin_scope(session: AsyncSession, actor: Actor) -> Any:
    """The filter on ``institution_path`` an admin may see: the subtree, and rows of unknown origin for
    network-wide admins (those at an institution without a parent)."""
    if actor.role is not Role.ADMIN:
        raise Forbidden("only admins see the HL7 gateway's queues", code="role")
    parent = (
        await session.execute(select(Institution.parent_id).where(Institution.id == actor.institution_id))
    ).scalar_one_or_none()
    in_subtree = HL7DeadLetter.institution_path.startswith(actor.institution_path)
    return or_(in_subtree, HL7DeadLetter.institution_path.is_(None)) if parent is None else in_subtree


def dead_letter_view(letter: HL7DeadLetter) -> dict[str, Any]:
    return {
        "id": letter.id,
        "direction": letter.direction,
        "reason": letter.reason,
        "received_at": _iso(letter.received_at),
        "peer": letter.peer,
        "facility": letter.facility,
        "message_control_id": letter.message_control_id,
        "outbox_id": letter.outbox_id,
        "size": len(letter.raw),
        "text": letter.raw.decode("utf-8", "replace"),
        "raw_base64": base64.b64encode(letter.raw).decode("ascii"),
        "replays": letter.replays,
        "last_replayed_at": _iso(letter.last_replayed_at),
        "last_replayed_by": letter.last_replayed_by,
        "last_outcome": letter.last_outcome,
        "resolved_at": _iso(letter.resolved_at),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


async def list_dead_letters(
    hub: Hub,
    actor: Actor,
    *,
    direction: str | None = None,
    unresolved: bool = False,
    limit: int = 50,
    before_id: int | None = None,
) -> dict[str, Any]:
    """Dead letters of the admin's subtree, newest first (their content is patient data: audited)."""
    if direction is not None and direction not in ("inbound", "outbound"):
        raise Invalid("direction is inbound or outbound", code="bad-parameter")
    async with read_use_case(hub, actor, "hl7.dead_letters.read", "hl7_dead_letter") as uow:
        scope = await _require_admin_scope(uow.session, actor)
        query = select(HL7DeadLetter).where(scope)
        if direction:
            query = query.where(HL7DeadLetter.direction == direction)
        if unresolved:
            query = query.where(HL7DeadLetter.resolved_at.is_(None))
        if before_id:
            query = query.where(HL7DeadLetter.id < before_id)
        rows = (await uow.session.execute(query.order_by(HL7DeadLetter.id.desc()).limit(limit))).scalars().all()
        uow.audit(object_path=actor.institution_path, detail={"count": len(rows)})
        return {
            "items": [dead_letter_view(r) for r in rows],
            "next_before_id": rows[-1].id if len(rows) == limit else None,
        }


async def replay_dead_letter(
    hub: Hub, actor: Actor, dead_letter_id: int, replay_inbound: InboundReplayer | None
) -> dict[str, Any]:
    """Run a dead letter again: an inbound message through the gateway's whole inbound path (parse, scope,
    idempotency, effect), an outbound one back into the outbox at the head of its patient's queue. The
    outcome is recorded on the dead letter, which counts as resolved once the message is no longer refused
    as unparseable."""
    async with use_case(hub, actor, "hl7.dead_letter.replay", "hl7_dead_letter", str(dead_letter_id)) as uow:
        scope = await _require_admin_scope(uow.session, actor)
        letter = (
            await uow.session.execute(select(HL7DeadLetter).where(HL7DeadLetter.id == dead_letter_id, scope))
        ).scalar_one_or_none()
        if letter is None:
            raise NotFound(f"no dead letter {dead_letter_id} in your scope")
        uow.audit(object_path=letter.institution_path)
        if letter.direction == "outbound":
            await _requeue(uow.session, hub, letter, actor)
            return dead_letter_view(letter)
        if replay_inbound is None:
            raise Conflict("the HL7 gateway is not running in this process", code="hl7-gateway-off")
        raw, peer = letter.raw, letter.peer
    outcome = await replay_inbound(raw, peer)
    async with hub.sessions() as session:
        letter = await session.get(HL7DeadLetter, dead_letter_id)
        assert letter is not None
        now = hub.clock.now()
        letter.replays += 1
        letter.last_replayed_at = now
        letter.last_replayed_by = actor.username
        letter.last_outcome = f"{outcome.ack_code}: {outcome.text}" if outcome.text else outcome.ack_code
        if outcome.ack_code != "AR" and letter.resolved_at is None:
            letter.resolved_at = now
        await session.commit()
        return dead_letter_view(letter)


async def _requeue(session: AsyncSession, hub: Hub, letter: HL7DeadLetter, actor: Actor) -> None:
    item = await session.get(HL7OutboxItem, letter.outbox_id) if letter.outbox_id else None
    if item is None:
        raise NotFound(f"dead letter {letter.id} has no outbox message to send again")
    if item.status == "pending":
        raise Conflict(f"outbox message {item.id} is already waiting to be sent", code="already-queued")
    now = hub.clock.now()
    item.status = "pending"
    item.attempts = 0
    item.next_attempt_at = None
    item.lease_owner = item.lease_until = None
    letter.replays += 1
    letter.last_replayed_at = now
    letter.last_replayed_by = actor.username
    letter.last_outcome = f"queued again as outbox message {item.id}"
    letter.resolved_at = now
    await session.flush()
