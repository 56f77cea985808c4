"""The job state machine: the MOVES table walked pair by pair, and the
properties the rest of the code relies on (finals are final, `writing`
only ends, every state is reachable and can end)."""
from __future__ import annotations

from collections import deque
from itertools import product

import pytest

from crm_enrich.jobs.state import (
    AWAITING,
    FINAL,
    HELD,
    MOVES,
    STATES,
    WORKING,
    IllegalMove,
    State,
    check_move,
)

PAIRS = list(product(STATES, STATES))


def allowed_by_table(origin: State, goal: State) -> bool:
    return goal in MOVES[origin] or (goal == origin and origin in WORKING)


def reachable_from(start: State) -> set[State]:
    seen, todo = {start}, deque([start])
    while todo:
        for nxt in MOVES[todo.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_table_has_a_row_for_every_state_and_names_only_states():
    assert set(MOVES) == set(STATES)
    for targets in MOVES.values():
        assert targets <= set(STATES)


def test_every_state_is_working_writing_or_final_and_only_one_of_them():
    groups = [WORKING, frozenset({State.WRITING}), FINAL]
    assert frozenset().union(*groups) == set(STATES)
    assert sum(len(g) for g in groups) == len(STATES)
    assert AWAITING | HELD <= WORKING


@pytest.mark.parametrize("origin, goal", PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_check_move_accepts_exactly_what_the_table_allows(origin, goal):
    # As stored in Redis: plain strings.
    if allowed_by_table(origin, goal):
        moved = check_move(origin.value, goal.value)
        assert moved is goal and isinstance(moved, State)
    else:
        with pytest.raises(IllegalMove) as refused:
            check_move(origin.value, goal.value)
        assert (refused.value.current, refused.value.target) == (origin.value, goal.value)
        assert str(refused.value) == f"a job may not move from {origin.value} to {goal.value}"


def test_the_walk_saw_both_answers():
    # Guards the parametrised walk against a table that allows everything or nothing.
    answers = {allowed_by_table(a, b) for a, b in PAIRS}
    assert answers == {True, False}


@pytest.mark.parametrize("current, target", [("bogus", "done"), ("received", "bogus"), ("", "")])
def test_an_unknown_state_is_an_illegal_move_naming_both(current, target):
    with pytest.raises(IllegalMove, match=f"from {current} to {target}"):
        check_move(current, target)


@pytest.mark.parametrize("final", sorted(FINAL))
def test_a_final_state_has_no_way_out_not_even_to_itself(final):
    assert MOVES[final] == frozenset()
    for goal in STATES:
        with pytest.raises(IllegalMove):
            check_move(final, goal)


def test_writing_only_ends():
    assert MOVES[State.WRITING] == FINAL
    for goal in set(STATES) - FINAL:
        with pytest.raises(IllegalMove, match=f"from writing to {goal}"):
            check_move(State.WRITING, goal)


@pytest.mark.parametrize("state", sorted(WORKING))
def test_a_working_state_may_repeat_itself(state):
    # A replayed step (redelivered task, resume) writes its state again.
    assert check_move(state, state) == state


def test_only_a_held_job_goes_back_to_received():
    into_received = {origin for origin in STATES if State.RECEIVED in MOVES[origin]}
    assert into_received == HELD


def test_every_state_is_reachable_from_received():
    assert reachable_from(State.RECEIVED) == set(STATES)


@pytest.mark.parametrize("state", sorted(set(STATES) - FINAL))
def test_every_unfinished_state_can_end(state):
    assert reachable_from(state) & FINAL
    # ... and each end on its own: a job can always be finished as failed or skipped.
    assert {State.FAILED, State.SKIPPED, State.DONE} <= MOVES[state]
