"""A consultation (会诊) as a session: its phases and who moves them, as a pure table.

The request's own lifecycle (queued → claimed → final) still says who holds the work; the phase says where
the session is: a time is proposed by one side and agreed by the other, the session starts, the consultant
center writes the opinion (会诊意见). A consultation ordered without any wished time is a written one
(非实时会诊): its opinion needs no session.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from telenet.domain.errors import Conflict


class Phase(StrEnum):
    REQUESTED = "requested"  # no time proposed: a written consultation unless someone proposes one
    PROPOSED = "proposed"  # a time proposed by one side, waiting for the other side
    SCHEDULED = "scheduled"  # the time agreed by both sides
    IN_SESSION = "in_session"
    OPINION = "opinion"  # the consultant center signed its opinion
    CANCELLED = "cancelled"


class Step(StrEnum):
    PROPOSE = "propose"
    AGREE = "agree"
    START = "start"
    OPINION = "opinion"
    CANCEL = "cancel"


class Side(StrEnum):
    """Who proposes or agrees a time: the inviting (requesting) institution or the invited consultant center."""

    REQUESTING = "requesting"
    CONSULTANT = "consultant"


_P, _S = Phase, Step

PHASES: Mapping[tuple[Phase, Step], Phase] = MappingProxyType(
    {
        (_P.REQUESTED, _S.PROPOSE): _P.PROPOSED,
        (_P.PROPOSED, _S.PROPOSE): _P.PROPOSED,  # a counter-proposal
        (_P.SCHEDULED, _S.PROPOSE): _P.PROPOSED,  # rescheduling needs the other side's agreement again
        (_P.PROPOSED, _S.AGREE): _P.SCHEDULED,
        (_P.SCHEDULED, _S.START): _P.IN_SESSION,
        (_P.IN_SESSION, _S.OPINION): _P.OPINION,
        (_P.REQUESTED, _S.OPINION): _P.OPINION,  # a written consultation (no session was ever proposed)
        (_P.REQUESTED, _S.CANCEL): _P.CANCELLED,
        (_P.PROPOSED, _S.CANCEL): _P.CANCELLED,
        (_P.SCHEDULED, _S.CANCEL): _P.CANCELLED,
        (_P.IN_SESSION, _S.CANCEL): _P.CANCELLED,  # the request's own cancel decides whether it may be
    }
)
"""Every legal (phase, step) and the phase it leads to; anything else is a 409."""

_PHRASE = {
    Step.PROPOSE: "propose a time for",
    Step.AGREE: "agree the time of",
    Step.START: "start the session of",
    Step.OPINION: "write the opinion of",
    Step.CANCEL: "cancel",
}


def next_phase(phase: Phase | str, step: Step | str) -> Phase:
    """The phase ``step`` leads to from ``phase``; ``Conflict`` (illegal-transition) when the table has none."""
    phase_, step_ = Phase(phase), Step(step)
    target = PHASES.get((phase_, step_))
    if target is None:
        raise Conflict(
            f"cannot {_PHRASE[step_]} a consultation that is {phase_.value}",
            code="illegal-transition",
            details={"phase": phase_.value, "action": step_.value},
        )
    return target


def check_agreeing_side(proposed_by: Side | str | None, agreeing: Side | str) -> None:
    """A time is agreed by the side that did not propose it (the requester proposes, the consultant center
    agrees or proposes another, which the requester then agrees)."""
    if proposed_by is not None and Side(proposed_by) is Side(agreeing):
        raise Conflict(
            "the other side agrees a proposed time, not the side that proposed it",
            code="own-proposal",
            details={"proposed_by": Side(proposed_by).value},
        )


def allowed_steps(phase: Phase | str) -> frozenset[Step]:
    phase_ = Phase(phase)
    return frozenset(step for (from_phase, step) in PHASES if from_phase is phase_)
