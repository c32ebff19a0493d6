"""The request state machine as a pure transition table (DESIGN "Request lifecycle").

Only *which* state follows *which* action lives here; who may act (role, scope, lease holder) is
checked by the service layer before it asks for the transition.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import TypeVar

from telenet.domain.errors import Conflict, Invalid

E = TypeVar("E", bound=StrEnum)


class Kind(StrEnum):
    """The three remote services the hub brokers."""

    IMAGING = "imaging"
    ECG = "ecg"
    CONSULTATION = "consultation"


class Priority(StrEnum):
    """Clinical urgency of a request; a lower ``rank`` is more urgent."""

    STAT = "stat"
    URGENT = "urgent"
    ROUTINE = "routine"

    @property
    def rank(self) -> int:
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {p: i for i, p in enumerate(Priority)}


class RequestState(StrEnum):
    ORDERED = "ordered"
    QUEUED = "queued"
    CLAIMED = "claimed"
    FINAL = "final"
    RETURNED = "returned"
    CANCELLED = "cancelled"


class Action(StrEnum):
    DATA_COMPLETE = "data_complete"
    CLAIM = "claim"
    RELEASE = "release"
    LEASE_EXPIRED = "lease_expired"
    SAVE_PRELIMINARY = "save_preliminary"
    FINALIZE = "finalize"
    RETURN = "return"
    RESUBMIT = "resubmit"
    ESCALATE = "escalate"
    CANCEL = "cancel"
    ADDENDUM = "addendum"


class ReturnReason(StrEnum):
    """Why the invited side sends a request back (or declines a consultation)."""

    BAD_IMAGE_QUALITY = "bad_image_quality"
    WRONG_PATIENT = "wrong_patient"
    MISSING_DATA = "missing_data"
    INCOMPLETE_STUDY = "incomplete_study"
    OUT_OF_SCOPE = "out_of_scope"
    OTHER = "other"


_S = RequestState
_A = Action

TRANSITIONS: Mapping[tuple[RequestState, Action], RequestState] = MappingProxyType(
    {
        (_S.ORDERED, _A.DATA_COMPLETE): _S.QUEUED,
        (_S.QUEUED, _A.CLAIM): _S.CLAIMED,
        # Renewal of the lease; the service checks that the caller is the holder.
        (_S.CLAIMED, _A.CLAIM): _S.CLAIMED,
        (_S.CLAIMED, _A.RELEASE): _S.QUEUED,
        (_S.CLAIMED, _A.LEASE_EXPIRED): _S.QUEUED,
        (_S.CLAIMED, _A.SAVE_PRELIMINARY): _S.CLAIMED,
        (_S.CLAIMED, _A.FINALIZE): _S.FINAL,
        # For a consultation "return" is the invited side declining with a reason.
        (_S.CLAIMED, _A.RETURN): _S.RETURNED,
        (_S.RETURNED, _A.RESUBMIT): _S.QUEUED,
        # Escalation re-routes: the request is queued again at a higher-tier center.
        (_S.QUEUED, _A.ESCALATE): _S.QUEUED,
        (_S.CLAIMED, _A.ESCALATE): _S.QUEUED,
        (_S.ORDERED, _A.CANCEL): _S.CANCELLED,
        (_S.QUEUED, _A.CANCEL): _S.CANCELLED,
        (_S.RETURNED, _A.CANCEL): _S.CANCELLED,
        # A final report is immutable; corrections are signed addenda.
        (_S.FINAL, _A.ADDENDUM): _S.FINAL,
    }
)
"""Every legal (state, action) pair and the state it leads to; anything absent is illegal."""

KIND_EXCLUDED_ACTIONS: Mapping[Kind, frozenset[Action]] = MappingProxyType(
    {
        Kind.IMAGING: frozenset(),
        Kind.ECG: frozenset(),
        # A consultation has no data to wait for: it is queued at once.
        Kind.CONSULTATION: frozenset({Action.DATA_COMPLETE}),
    }
)
"""Actions that are illegal for a kind even where the table would allow them."""

TERMINAL_STATES: frozenset[RequestState] = frozenset({RequestState.FINAL, RequestState.CANCELLED})

_ACTION_PHRASE: Mapping[Action, str] = MappingProxyType(
    {
        Action.DATA_COMPLETE: "mark data complete for",
        Action.CLAIM: "claim",
        Action.RELEASE: "release",
        Action.LEASE_EXPIRED: "expire the lease of",
        Action.SAVE_PRELIMINARY: "save a preliminary report on",
        Action.FINALIZE: "finalize",
        Action.RETURN: "return",
        Action.RESUBMIT: "resubmit",
        Action.ESCALATE: "escalate",
        Action.CANCEL: "cancel",
        Action.ADDENDUM: "add an addendum to",
    }
)


def _coerce(enum: type[E], value: E | str, what: str) -> E:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum)
        raise Invalid(
            f"unknown {what} {value!r} (expected one of: {allowed})",
            code=f"unknown-{what.replace(' ', '-')}",
            details={what.replace(" ", "_"): str(value)},
        ) from None


def initial_state(kind: Kind | str) -> RequestState:
    """The state a new request starts in: a consultation is queued at once, a read waits for its data."""
    if _coerce(Kind, kind, "kind") is Kind.CONSULTATION:
        return RequestState.QUEUED
    return RequestState.ORDERED


def transition(kind: Kind | str, state: RequestState | str, action: Action | str) -> RequestState:
    """The state that ``action`` leads to from ``state``; raises ``Conflict`` when it is illegal.

    Unknown kind, state or action strings raise ``Invalid``: they are bad input, not a race.
    """
    kind_ = _coerce(Kind, kind, "kind")
    state_ = _coerce(RequestState, state, "state")
    action_ = _coerce(Action, action, "action")
    target = TRANSITIONS.get((state_, action_))
    if target is None or action_ in KIND_EXCLUDED_ACTIONS[kind_]:
        message = f"cannot {_ACTION_PHRASE[action_]} a request that is {state_.value}"
        if target is not None:
            message += f": a {kind_.value} request does not allow {action_.value}"
        raise Conflict(
            message,
            code="illegal-transition",
            details={"state": state_.value, "action": action_.value},
        )
    return target


def allowed_actions(kind: Kind | str, state: RequestState | str) -> frozenset[Action]:
    """The actions the table allows from ``state`` for ``kind`` (before any permission check)."""
    kind_ = _coerce(Kind, kind, "kind")
    state_ = _coerce(RequestState, state, "state")
    return frozenset(
        action
        for (from_state, action) in TRANSITIONS
        if from_state is state_ and action not in KIND_EXCLUDED_ACTIONS[kind_]
    )


def is_terminal(state: RequestState | str) -> bool:
    """True when no more work is due: ``final`` (only addenda, which keep it final) or ``cancelled``."""
    return _coerce(RequestState, state, "state") in TERMINAL_STATES
