"""A job's states and the moves allowed between them.

    received → enriching → awaiting_email → awaiting_phone → verifying →
    awaiting_verification → writing → done

(or `awaiting_list`, a large run's job on a Clearout bulk list), with
`skipped` and `failed` as the other ends, and two holds for quota:
`deferred` (Clodura's daily quota or our budget; resumed at the reset) and
`paused` (no credits; resumed when credits return). The awaiting states
wait for a result that Clodura sends later; no worker waits with them.

`JobStore.transition` refuses any move not in `MOVES`, naming both states.
A task may run a job again in any unfinished state (a redelivery, a
resume), so every working state may move to the others; what the table
forbids is leaving a final state, and anything but an end from `writing`,
where the batch flush owns the job.
"""
from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    RECEIVED = "received"
    ENRICHING = "enriching"
    AWAITING_EMAIL = "awaiting_email"
    AWAITING_PHONE = "awaiting_phone"
    VERIFYING = "verifying"
    AWAITING_VERIFICATION = "awaiting_verification"
    # On a Clearout bulk list (a large run's verifications or finder
    # searches): the sweeper follows the list and brings the job back.
    AWAITING_LIST = "awaiting_list"
    WRITING = "writing"
    DONE = "done"
    SKIPPED = "skipped"
    DEFERRED = "deferred"
    PAUSED = "paused"
    FAILED = "failed"


class SkipReason(StrEnum):
    """Why a job ended `skipped`: the code in the job's hash, the
    `job.skipped` log event and crm_enrich_jobs_skipped_total{reason}."""
    RECORD_GONE = "record_gone"                # deleted, or not visible to the integration user
    OWN_WRITE_BACK = "own_write_back"          # the event was our own update
    NO_MATCH = "no_match"                      # Clodura knows nobody and there is no email to verify
    NO_ACCOUNT_FIELDS = "no_account_fields"    # the field map has no [Account] section
    NO_COMPANY_MATCH = "no_company_match"      # no company at Clodura matches the Account
    ORGANISATION_GONE = "organisation_gone"    # Clodura no longer knows the organisation it matched
    UNSUPPORTED_OBJECT = "unsupported_object"  # no enrichment for this kind of record

    @property
    def text(self) -> str:
        return SKIP_TEXT[self]


SKIP_TEXT: dict[SkipReason, str] = {
    SkipReason.RECORD_GONE: "record deleted or not visible",
    SkipReason.OWN_WRITE_BACK: "the change was our own write-back",
    SkipReason.NO_MATCH: "no match at Clodura and no email to verify",
    SkipReason.NO_ACCOUNT_FIELDS: "the field map has no [Account] fields",
    SkipReason.NO_COMPANY_MATCH: "no company at Clodura matches this Account",
    SkipReason.ORGANISATION_GONE: "Clodura does not know the organisation any more",
    SkipReason.UNSUPPORTED_OBJECT: "enrichment of this object is not supported yet",
}


STATES: tuple[State, ...] = tuple(State)
FINAL = frozenset({State.DONE, State.SKIPPED, State.FAILED})
# Parked: waiting for a result that comes later (callback or poll) ...
AWAITING = frozenset({State.AWAITING_EMAIL, State.AWAITING_PHONE, State.AWAITING_VERIFICATION,
                      State.AWAITING_LIST})
# ... or for the provider to let us spend again.
HELD = frozenset({State.DEFERRED, State.PAUSED})
PARKED = AWAITING | HELD
# The states a task works in: a job in one of them may be picked up again.
WORKING = frozenset({State.RECEIVED, State.ENRICHING, State.VERIFYING}) | AWAITING | HELD

_ENDS = FINAL
_TO_WORK = frozenset({State.ENRICHING, State.VERIFYING, State.WRITING}) | AWAITING | HELD | _ENDS

MOVES: dict[State, frozenset[State]] = {
    # A job starts in `received`; a held job goes back to it when resumed.
    State.RECEIVED: _TO_WORK,
    State.ENRICHING: _TO_WORK,
    State.AWAITING_EMAIL: _TO_WORK,
    State.AWAITING_PHONE: _TO_WORK,
    State.VERIFYING: _TO_WORK,
    State.AWAITING_VERIFICATION: _TO_WORK,
    State.AWAITING_LIST: _TO_WORK,
    State.DEFERRED: _TO_WORK | {State.RECEIVED},
    State.PAUSED: _TO_WORK | {State.RECEIVED},
    # Queued for the batched write: only the flush ends it.
    State.WRITING: _ENDS,
    State.DONE: frozenset(),
    State.SKIPPED: frozenset(),
    State.FAILED: frozenset(),
}


class IllegalMove(ValueError):
    def __init__(self, current: str, target: str):
        super().__init__(f"a job may not move from {current} to {target}")
        self.current, self.target = current, target


class JobMoved(IllegalMove):
    """The stored job is no longer in the state the caller read: someone
    else (the write flush, the sweeper) moved it meanwhile. The caller's
    copy is stale and its move is dropped."""

    def __init__(self, expected: str, stored: str | None, target: str):
        ValueError.__init__(self, f"the job moved from {expected} to {stored} meanwhile; not moving it to {target}")
        self.current, self.target, self.stored = expected, target, stored


def check_move(current: str, target: str) -> State:
    """The target as a State, or IllegalMove. A working state moving to
    itself (a replayed step) is allowed; nothing leaves a final state."""
    try:
        origin, goal = State(current), State(target)
    except ValueError:
        raise IllegalMove(current, target) from None
    if goal in MOVES[origin] or (goal == origin and origin in WORKING):
        return goal
    raise IllegalMove(current, target)
