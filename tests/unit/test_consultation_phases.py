"""The consultation's phase table (telenet/domain/consultation.py): every (phase, step) pair, legal or 409."""

from __future__ import annotations

import pytest

from telenet.domain.consultation import Phase, Side, Step, allowed_steps, check_agreeing_side, next_phase
from telenet.domain.errors import Conflict

LEGAL = {
    (Phase.REQUESTED, Step.PROPOSE): Phase.PROPOSED,
    (Phase.PROPOSED, Step.PROPOSE): Phase.PROPOSED,
    (Phase.SCHEDULED, Step.PROPOSE): Phase.PROPOSED,
    (Phase.PROPOSED, Step.AGREE): Phase.SCHEDULED,
    (Phase.SCHEDULED, Step.START): Phase.IN_SESSION,
    (Phase.IN_SESSION, Step.OPINION): Phase.OPINION,
    (Phase.REQUESTED, Step.OPINION): Phase.OPINION,
    (Phase.REQUESTED, Step.CANCEL): Phase.CANCELLED,
    (Phase.PROPOSED, Step.CANCEL): Phase.CANCELLED,
    (Phase.SCHEDULED, Step.CANCEL): Phase.CANCELLED,
    (Phase.IN_SESSION, Step.CANCEL): Phase.CANCELLED,
}


@pytest.mark.parametrize(("phase", "step"), [(p, s) for p in Phase for s in Step])
def test_every_pair_is_legal_or_a_409(phase: Phase, step: Step) -> None:
    expected = LEGAL.get((phase, step))
    if expected is not None:
        assert next_phase(phase, step) is expected
        assert step in allowed_steps(phase)
        return
    with pytest.raises(Conflict) as refused:
        next_phase(phase, step)
    assert refused.value.code == "illegal-transition"
    assert refused.value.details == {"phase": phase.value, "action": step.value}
    assert step not in allowed_steps(phase)


@pytest.mark.parametrize(
    ("proposed_by", "agreeing", "ok"),
    [
        (Side.REQUESTING, Side.CONSULTANT, True),
        (Side.CONSULTANT, Side.REQUESTING, True),
        (Side.REQUESTING, Side.REQUESTING, False),
        (Side.CONSULTANT, Side.CONSULTANT, False),
    ],
)
def test_the_other_side_agrees(proposed_by: Side, agreeing: Side, ok: bool) -> None:
    if ok:
        check_agreeing_side(proposed_by, agreeing)
        return
    with pytest.raises(Conflict) as refused:
        check_agreeing_side(proposed_by, agreeing)
    assert refused.value.code == "own-proposal"


def test_the_console_names_every_phase_and_timeline_step() -> None:
    from telenet.web import i18n

    steps = {"ordered", "center_invited", "center_removed", "participant_added", "participant_removed"}
    steps |= {s.value for s in Step}
    missing = [f"phase.{p.value}" for p in Phase if f"phase.{p.value}" not in i18n.TEXT]
    missing += [f"consult.step.{s}" for s in sorted(steps) if f"consult.step.{s}" not in i18n.TEXT]
    assert missing == []
    for code in ("own-proposal", "not-accepted", "participant-center-not-invited", "participant-not-specialist"):
        assert code in i18n.PROBLEMS, code
