"""The job store: one Redis hash per job (state, times, attempts, last error,
Salesforce ids, field names) and, apart from it, the provider data the job
gathered.

The job hash lives a week and holds bookkeeping only: ids, states, times,
errors (masked) and field names, never a record's or a provider's values.
Every value (the record as read, provider answers, the write planned) lives
in the job's provider-data key, whose TTL is set once, when the first value
is stored, and never extended: nothing personal stays past 24 hours (and
Clodura's policy allows keeping its data no longer, docs/clodura.md#data-retention).
When the job ends, its values are dropped at once; only the notes of what
was asked asynchronously (provider ids and times) stay until the key expires.

Every move between states goes through `transition`, which checks it
against the table in `crm_enrich.jobs.state`.
"""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from crm_enrich import counters, keys
from crm_enrich.jobs.state import FINAL, STATES, JobMoved, SkipReason, State, check_move
from crm_enrich.logs import log, mask_text
from crm_enrich.redis_typing import hash_fields, text, text_hash, text_set, texts

FINAL_STATES = FINAL
JOB_META_TTL_S = keys.JOB_META_TTL_S
DEDUPE_TTL_S = keys.DEDUPE_TTL_S
# The provider-data slots kept once a job is final (until the key's 24 h
# TTL): what was asked of a provider asynchronously and when (ids and
# times), and the job's outcome (flags and the verdict); no values.
KEPT_WHEN_FINAL = ("pending:", "outcome")


def _now() -> float:
    return round(time.time(), 3)


@dataclass
class Job:
    id: str
    state: str
    object: str
    record_id: str
    source: str
    created_at: float
    updated_at: float
    attempts: int = 0
    enqueued_at: float | None = None
    dedupe_key: str | None = None
    last_error: str | None = None
    input: dict = field(default_factory=dict)
    fields_written: list[str] = field(default_factory=list)
    # Mapped fields left out of the write, with why (names and reasons only).
    fields_skipped: dict[str, str] = field(default_factory=dict)
    # The names of the provider-data slots the job had when it ended.
    provider_slots: list[str] = field(default_factory=list)
    steps: list[dict] = field(default_factory=list)
    force: bool = False
    skip_reason: str | None = None

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> Job:
        return cls(
            id=raw["id"],
            state=raw["state"],
            object=raw["object"],
            record_id=raw["record_id"],
            source=raw.get("source", ""),
            created_at=float(raw["created_at"]),
            updated_at=float(raw["updated_at"]),
            attempts=int(raw.get("attempts", 0)),
            enqueued_at=float(raw["enqueued_at"]) if raw.get("enqueued_at") else None,
            dedupe_key=raw.get("dedupe_key") or None,
            last_error=raw.get("last_error") or None,
            input=json.loads(raw.get("input", "{}")),
            fields_written=json.loads(raw.get("fields_written", "[]")),
            fields_skipped=json.loads(raw.get("fields_skipped", "{}")),
            provider_slots=json.loads(raw.get("provider_slots", "[]")),
            steps=json.loads(raw.get("steps", "[]")),
            force=raw.get("force") == "1",
            skip_reason=raw.get("skip_reason") or None,
        )


# Compare and set: write the job's new hash and move it between state sets
# only if the stored state is still the one the caller read. Answers the
# stored state as it was (nil if the job is gone).
_MOVE = """
local stored = redis.call('HGET', KEYS[1], 'state')
if stored ~= ARGV[1] then return stored end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('SMOVE', KEYS[2], KEYS[3], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[2])
return stored
"""


class JobStore:
    def __init__(self, client: redis.Redis):
        self.r = client
        self._move = client.register_script(_MOVE)
        # A job's copy of provider data lives 24 h from the provider's answer,
        # whatever the response cache's own TTL (which may even be 0: off).
        self.provider_ttl_s = keys.PROVIDER_DATA_MAX_TTL_S

    @classmethod
    def from_url(cls, url: str, **kw) -> JobStore:
        return cls(redis.Redis.from_url(url, decode_responses=True, socket_timeout=5,
                                        socket_connect_timeout=2), **kw)

    # keys
    job_key = staticmethod(keys.job)
    provider_key = staticmethod(keys.job_provider_data)
    dedupe_key = staticmethod(keys.dedupe)
    state_key = staticmethod(keys.jobs_in_state)

    # creation and de-duplication
    def create_unless_seen(self, dedupe_key: str, object_type: str, record_id: str,
                           source: str, input_fields: dict, force: bool = False,
                           dedupe_ttl_s: int = DEDUPE_TTL_S) -> tuple[Job, bool]:
        """Create a job for an inbound event, or return the one already made
        for the same event. The second value is True when the event is a
        duplicate of one already queued.

        A job that was created but never made it onto the queue (Redis or
        the broker failed in between) is handed back as not duplicate, so the
        sender's retry queues it: an event is only remembered as seen once
        it is durably queued."""
        existing_id = text(self.r.get(self.dedupe_key(dedupe_key)))
        if existing_id:
            job = self.get(existing_id)
            if job is not None:
                return job, job.enqueued_at is not None
        now = _now()
        job = Job(id=uuid.uuid4().hex, state=State.RECEIVED, object=object_type, record_id=record_id,
                  source=source, created_at=now, updated_at=now, dedupe_key=dedupe_key,
                  input=input_fields, force=force)
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self.dedupe_key(dedupe_key), job.id, nx=True, ex=dedupe_ttl_s)
        pipe.hset(self.job_key(job.id), mapping=self._to_hash(job))
        pipe.expire(self.job_key(job.id), JOB_META_TTL_S)
        pipe.sadd(self.state_key(State.RECEIVED), job.id)
        pipe.set(keys.record_last_job(object_type, record_id), job.id, ex=JOB_META_TTL_S)
        created, *_ = pipe.execute()
        if not created:  # another request for the same event won the race
            self.delete(job.id)
            # The winner's job; None (which callers do not expect) if its key or job has gone since.
            return self.get(self.r.get(self.dedupe_key(dedupe_key))), True  # type: ignore[arg-type,return-value]
        return job, False

    def claim_dedupe_key(self, dedupe_key: str, job_id: str, ttl_s: int) -> bool:
        """Make a job that exists already the answer to `dedupe_key`, unless
        another job is."""
        return bool(self.r.set(self.dedupe_key(dedupe_key), job_id, nx=True, ex=ttl_s))

    def mark_enqueued(self, job_id: str) -> None:
        self.r.hset(self.job_key(job_id), "enqueued_at", _now())

    def delete(self, job_id: str) -> None:
        pipe = self.r.pipeline()
        pipe.delete(self.job_key(job_id), self.provider_key(job_id))
        for state in STATES:
            pipe.srem(self.state_key(state), job_id)
        pipe.execute()

    # reading and transitions
    def get(self, job_id: str) -> Job | None:
        raw = text_hash(self.r.hgetall(self.job_key(job_id)))
        return Job.from_hash(raw) if raw else None

    def transition(self, job: Job, state: str, **changes: Any) -> Job:
        """Move the job to `state`, recording the step and any other changes
        in one write. IllegalMove if the table forbids the move; JobMoved
        (and nothing written) if the stored job is no longer in the state
        this copy was read in: the flush, the sweeper and a task may each
        hold a copy, and the last writer must not undo an earlier move."""
        target = check_move(job.state, state)
        previous = job.state
        ending = target in FINAL_STATES and previous not in FINAL_STATES
        slots: list[str] = []
        if ending:
            slots = texts(self.r.hkeys(self.provider_key(job.id)))
            changes.setdefault("provider_slots", sorted(set(job.provider_slots) | set(slots)))
        now = _now()
        moved = replace(job, state=target, updated_at=now, steps=[*job.steps, {"state": target, "t": now}],
                        **changes)
        fields = [str(x) for pair in self._to_hash(moved).items() for x in pair]
        stored = self._move(keys=[self.job_key(job.id), self.state_key(previous), self.state_key(target)],
                            args=[previous, job.id, *fields])
        if stored != previous:
            raise JobMoved(previous, stored, target)
        job.__dict__.update(moved.__dict__)
        if ending:
            dropped = [slot for slot in slots if not slot.startswith(KEPT_WHEN_FINAL)]
            if dropped:
                # The job is over: the values it gathered go now, not in 24 h.
                self.r.hdel(self.provider_key(job.id), *dropped)
            counters.incr(self.r, "jobs_finished", state=state, object=job.object)
            if state == State.DONE:
                counters.observe(self.r, "job_to_writeback_seconds", job.updated_at - job.created_at)
        return job

    def finish(self, job: Job, state: State, reason: str | SkipReason | None = None, detail: str = "",
               **changes: Any) -> bool:
        """End the job in a final state with its reason, unless it has
        ended already (a late or repeated answer); True if it moved.

        A skip must give a SkipReason (`detail` adds to its text): every
        skip is logged and counted here, by its code."""
        if job.final:
            return False
        if state == State.SKIPPED:
            if not isinstance(reason, SkipReason):
                raise TypeError(f"a skip needs a SkipReason, not {reason!r}")
            changes["skip_reason"] = reason.value
            reason = f"{reason.text}: {detail}" if detail else reason.text
        try:
            self.transition(job, state, last_error=reason[:500] if reason else None, **changes)
        except JobMoved:
            return False  # ended, or moved on, by someone else meanwhile
        if state == State.SKIPPED:
            counters.incr(self.r, "jobs_skipped", reason=job.skip_reason)
            log.info("job.skipped", job_id=job.id, object=job.object, record_id=job.record_id,
                     reason=job.skip_reason)
        return True

    def finish_by_id(self, job_id: str, state: State, reason: str | SkipReason | None = None, detail: str = "",
                     **changes: Any) -> Job | None:
        """`finish` for a job known by id; the job, if it moved."""
        job = self.get(job_id)
        return job if job is not None and self.finish(job, state, reason, detail, **changes) else None

    def note_error(self, job: Job, error: str) -> Job:
        """Record a passing error without moving the job (it will be
        retried). The state is left as the store holds it."""
        job.last_error = error
        job.updated_at = _now()
        job.steps.append({"state": job.state, "t": job.updated_at})
        self.r.hset(self.job_key(job.id), mapping={"last_error": error, "updated_at": job.updated_at,
                                                   "steps": json.dumps(job.steps)})
        return job

    def count_attempt(self, job: Job) -> int:
        job.attempts = self.r.hincrby(self.job_key(job.id), "attempts", 1)
        return job.attempts

    def ids_in_state(self, state: State) -> set[str]:
        return text_set(self.r.smembers(self.state_key(state)))

    def counts_by_state(self) -> dict[str, int]:
        pipe = self.r.pipeline()
        for state in STATES:
            pipe.scard(self.state_key(state))
        return dict(zip(STATES, pipe.execute(), strict=True))

    # provider data (≤ 24 h)
    def save_provider_data(self, job_id: str, name: str, value: Any, fetched_at: float | None = None) -> None:
        """The key expires `provider_ttl_s` after the oldest answer it holds
        was fetched (a cached answer brings its own, earlier, time)."""
        key = self.provider_key(job_id)
        expire_at = int((fetched_at or time.time()) + self.provider_ttl_s)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(key, name, json.dumps(value))
        pipe.expireat(key, expire_at, nx=True)
        pipe.expireat(key, expire_at, lt=True)
        pipe.execute()

    def provider_data(self, job_id: str) -> dict:
        return {k: json.loads(v) for k, v in self.r.hgetall(self.provider_key(job_id)).items()}

    def forget_provider_data(self, job_id: str, name: str) -> None:
        self.r.hdel(self.provider_key(job_id), name)

    def memory(self, job: Job) -> JobMemory:
        return JobMemory(self, job.id, self.provider_data(job.id))

    @staticmethod
    def _to_hash(job: Job) -> dict:
        out = {
            "id": job.id, "state": job.state, "object": job.object, "record_id": job.record_id,
            "source": job.source, "created_at": job.created_at, "updated_at": job.updated_at,
            "attempts": job.attempts, "dedupe_key": job.dedupe_key or "",
            # An error may quote a value (Salesforce's own messages do).
            "last_error": mask_text(job.last_error) if job.last_error else "", "input": json.dumps(job.input),
            "fields_written": json.dumps(job.fields_written),
            "fields_skipped": json.dumps(job.fields_skipped),
            "provider_slots": json.dumps(job.provider_slots), "steps": json.dumps(job.steps),
            "force": int(job.force), "skip_reason": job.skip_reason or "",
        }
        if job.enqueued_at is not None:
            out["enqueued_at"] = job.enqueued_at
        return out


class JobMemory:
    """What a job has learnt so far, one named slot per step.

    Each provider answer is stored on the job before the next step runs,
    so a replayed task (killed worker, retry, resume) continues where it
    stopped and never pays for the same answer twice: `remembered` is the
    one place that rule lives."""

    def __init__(self, store: JobStore, job_id: str, values: dict[str, Any]):
        self.store, self.job_id, self.values = store, job_id, values

    def __contains__(self, slot: str) -> bool:
        return slot in self.values

    def __getitem__(self, slot: str) -> Any:
        return self.values[slot]

    def get(self, slot: str, default: Any = None) -> Any:
        return self.values.get(slot, default)

    def items(self):
        return self.values.items()

    def keep(self, slot: str, value: Any, fetched_at: float | None = None) -> Any:
        """Store a step's answer (its key's TTL follows `fetched_at`, the
        time the provider gave it) and answer it."""
        self.store.save_provider_data(self.job_id, slot, value, fetched_at)
        self.values[slot] = value
        return value

    def remembered(self, slot: str, compute: Callable[[], Any]) -> Any:
        """The slot's value, computed and stored the first time only.
        `compute` answers the value, a `Learnt` (value and when the
        provider gave it), or NOT_YET while the answer is on its way."""
        if slot in self.values:
            return self.values[slot]
        found = compute()
        if found is NOT_YET:
            return NOT_YET
        if isinstance(found, Learnt):
            return self.keep(slot, found.value, found.fetched_at)
        return self.keep(slot, found)

    def forget(self, slot: str) -> None:
        self.store.forget_provider_data(self.job_id, slot)
        self.values.pop(slot, None)


@dataclass(frozen=True)
class Learnt:
    value: Any
    fetched_at: float | None = None


NOT_YET = object()  # an answer still on its way: nothing to remember yet

TRACKED_TTL_S = keys.TRACKED_TTL_S
tracked_key = keys.tracked


def load_tracked_hashes(store: JobStore, object_type: str, record_id: str) -> dict[str, str]:
    return text_hash(store.r.hgetall(tracked_key(object_type, record_id)))


def save_tracked_hashes(store: JobStore, object_type: str, record_id: str, hashes: dict[str, str]) -> None:
    if hashes:
        key = tracked_key(object_type, record_id)
        pipe = store.r.pipeline(transaction=True)
        pipe.hset(key, mapping=hash_fields(hashes))
        pipe.expire(key, TRACKED_TTL_S)
        pipe.execute()
