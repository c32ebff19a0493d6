"""The request state machine: every legal transition, illegal ones refused with a clear 409."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from telenet.domain.errors import Conflict, Invalid
from telenet.domain.lifecycle import (
    KIND_EXCLUDED_ACTIONS,
    TRANSITIONS,
    Action,
    Kind,
    Priority,
    RequestState,
    ReturnReason,
    allowed_actions,
    initial_state,
    is_terminal,
    transition,
)

S = RequestState
A = Action

LEGAL = [
    (S.ORDERED, A.DATA_COMPLETE, S.QUEUED),
    (S.QUEUED, A.CLAIM, S.CLAIMED),
    (S.CLAIMED, A.CLAIM, S.CLAIMED),
    (S.CLAIMED, A.RELEASE, S.QUEUED),
    (S.CLAIMED, A.LEASE_EXPIRED, S.QUEUED),
    (S.CLAIMED, A.SAVE_PRELIMINARY, S.CLAIMED),
    (S.CLAIMED, A.FINALIZE, S.FINAL),
    (S.CLAIMED, A.RETURN, S.RETURNED),
    (S.RETURNED, A.RESUBMIT, S.QUEUED),
    (S.QUEUED, A.ESCALATE, S.QUEUED),
    (S.CLAIMED, A.ESCALATE, S.QUEUED),
    (S.ORDERED, A.CANCEL, S.CANCELLED),
    (S.QUEUED, A.CANCEL, S.CANCELLED),
    (S.RETURNED, A.CANCEL, S.CANCELLED),
    (S.FINAL, A.ADDENDUM, S.FINAL),
]

ILLEGAL = [
    (Kind.IMAGING, S.FINAL, A.CLAIM, "cannot claim a request that is final"),
    (Kind.IMAGING, S.ORDERED, A.CLAIM, "cannot claim a request that is ordered"),
    (Kind.ECG, S.QUEUED, A.FINALIZE, "cannot finalize a request that is queued"),
    (Kind.ECG, S.QUEUED, A.RETURN, "cannot return a request that is queued"),
    (Kind.IMAGING, S.CLAIMED, A.CANCEL, "cannot cancel a request that is claimed"),
    (Kind.IMAGING, S.FINAL, A.CANCEL, "cannot cancel a request that is final"),
    (Kind.IMAGING, S.FINAL, A.ESCALATE, "cannot escalate a request that is final"),
    (Kind.CONSULTATION, S.QUEUED, A.ADDENDUM, "cannot add an addendum to a request that is queued"),
    (Kind.IMAGING, S.QUEUED, A.RELEASE, "cannot release a request that is queued"),
    (Kind.IMAGING, S.QUEUED, A.LEASE_EXPIRED, "cannot expire the lease of a request that is queued"),
    (Kind.ECG, S.RETURNED, A.CLAIM, "cannot claim a request that is returned"),
    (Kind.IMAGING, S.QUEUED, A.DATA_COMPLETE, "cannot mark data complete for a request that is queued"),
    (Kind.IMAGING, S.QUEUED, A.RESUBMIT, "cannot resubmit a request that is queued"),
    (Kind.IMAGING, S.ORDERED, A.ESCALATE, "cannot escalate a request that is ordered"),
    (Kind.IMAGING, S.CANCELLED, A.RESUBMIT, "cannot resubmit a request that is cancelled"),
    (Kind.IMAGING, S.CANCELLED, A.CANCEL, "cannot cancel a request that is cancelled"),
    (Kind.CONSULTATION, S.CANCELLED, A.ADDENDUM, "cannot add an addendum to a request that is cancelled"),
    (
        Kind.CONSULTATION,
        S.ORDERED,
        A.DATA_COMPLETE,
        "cannot mark data complete for a request that is ordered: a consultation request does not allow data_complete",
    ),
]


@pytest.mark.parametrize("kind", list(Kind))
@pytest.mark.parametrize(("state", "action", "expected"), LEGAL)
def test_every_legal_transition(kind: Kind, state: S, action: A, expected: S) -> None:
    if kind is Kind.CONSULTATION and action is A.DATA_COMPLETE:
        with pytest.raises(Conflict):
            transition(kind, state, action)
    else:
        assert transition(kind, state, action) is expected


def test_table_is_exactly_the_documented_rules() -> None:
    assert dict(TRANSITIONS) == {(s, a): t for s, a, t in LEGAL}


@pytest.mark.parametrize(("kind", "state", "action", "message"), ILLEGAL)
def test_illegal_transition_is_a_clear_conflict(kind: Kind, state: S, action: A, message: str) -> None:
    before = dict(TRANSITIONS)
    current = state
    with pytest.raises(Conflict) as caught:
        current = transition(kind, state, action)
    error = caught.value
    assert error.message == message
    assert str(error) == message
    assert error.code == "illegal-transition"
    assert error.status == 409
    assert error.details == {"state": state.value, "action": action.value}
    # Nothing changed: the caller's state and the table are as they were.
    assert current is state
    assert dict(TRANSITIONS) == before


@pytest.mark.parametrize(
    ("kind", "expected"),
    [(Kind.IMAGING, S.ORDERED), (Kind.ECG, S.ORDERED), (Kind.CONSULTATION, S.QUEUED), ("ecg", S.ORDERED)],
)
def test_initial_state(kind: Kind | str, expected: S) -> None:
    assert initial_state(kind) is expected


def test_strings_are_accepted_and_unknown_values_are_invalid() -> None:
    assert transition("imaging", "queued", "claim") is S.CLAIMED
    assert transition("consultation", "claimed", "return") is S.RETURNED
    with pytest.raises(Invalid, match="unknown action 'sign'"):
        transition("imaging", "claimed", "sign")
    with pytest.raises(Invalid, match="unknown state"):
        transition("imaging", "done", "claim")
    with pytest.raises(Invalid, match="unknown kind"):
        initial_state("lab")


def test_return_value_and_reasons() -> None:
    assert Action.RETURN.value == "return"
    assert {r.value for r in ReturnReason} == {
        "bad_image_quality",
        "wrong_patient",
        "missing_data",
        "incomplete_study",
        "out_of_scope",
        "other",
    }


def test_priority_rank_orders_stat_first() -> None:
    assert [p.rank for p in (Priority.STAT, Priority.URGENT, Priority.ROUTINE)] == [0, 1, 2]
    assert sorted(Priority, key=lambda p: p.rank)[0] is Priority.STAT


@pytest.mark.parametrize(
    ("state", "terminal"),
    [
        (S.ORDERED, False),
        (S.QUEUED, False),
        (S.CLAIMED, False),
        (S.RETURNED, False),
        (S.FINAL, True),
        (S.CANCELLED, True),
    ],
)
def test_is_terminal(state: S, terminal: bool) -> None:
    assert is_terminal(state) is terminal


def test_allowed_actions() -> None:
    assert allowed_actions(Kind.IMAGING, S.ORDERED) == {A.DATA_COMPLETE, A.CANCEL}
    assert allowed_actions(Kind.CONSULTATION, S.ORDERED) == {A.CANCEL}
    assert allowed_actions(Kind.ECG, S.CLAIMED) == {
        A.CLAIM,
        A.RELEASE,
        A.LEASE_EXPIRED,
        A.SAVE_PRELIMINARY,
        A.FINALIZE,
        A.RETURN,
        A.ESCALATE,
    }
    assert allowed_actions(Kind.IMAGING, S.CANCELLED) == frozenset()


@given(st.sampled_from(list(Kind)), st.sampled_from(list(S)), st.sampled_from(list(A)))
def test_transition_follows_the_table_or_raises_conflict(kind: Kind, state: S, action: A) -> None:
    legal = (state, action) in TRANSITIONS and action not in KIND_EXCLUDED_ACTIONS[kind]
    try:
        result = transition(kind, state, action)
    except Conflict as error:
        assert not legal
        assert action.value in error.details["action"] and state.value in error.message
    else:
        assert legal
        assert result is TRANSITIONS[(state, action)]
    assert (action in allowed_actions(kind, state)) is legal


@given(st.sampled_from(list(Kind)), st.lists(st.sampled_from(list(A)), max_size=30))
def test_random_walks_stay_inside_the_machine(kind: Kind, actions: list[A]) -> None:
    state = initial_state(kind)
    reached_final = False
    for action in actions:
        try:
            following = transition(kind, state, action)
        except Conflict:
            continue
        if following is S.FINAL and state is not S.FINAL:
            assert state is S.CLAIMED, "only a claimed request can be finalized"
            reached_final = True
        state = following
    if state is S.CANCELLED:
        assert allowed_actions(kind, state) == frozenset()
    if reached_final:
        assert state is S.FINAL, "a final request never leaves final"


def test_nothing_leaves_cancelled() -> None:
    for kind, action in itertools.product(Kind, A):
        with pytest.raises(Conflict, match="a request that is cancelled"):
            transition(kind, S.CANCELLED, action)
