"""The job store: one Redis hash per job (state, times, attempts, last error,
Salesforce ids) and, apart from it, the provider data the job gathered.

Provider data lives in its own key whose TTL is set once, when the first
value is stored, and never extended: Clodura's policy allows keeping its
data for at most 24 hours (docs/clodura.md#data-retention).

Every move between states goes through `transition`, which checks it
against the table in `crm_enrich.jobs.state`.
"""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from crm_enrich import counters, keys
from crm_enrich.jobs.state import FINAL, HELD, STATES, State, check_move

FINAL_STATES = FINAL
JOB_META_TTL_S = keys.JOB_META_TTL_S
DEDUPE_TTL_S = keys.DEDUPE_TTL_S


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
    steps: list[dict] = field(default_factory=list)
    force: bool = False

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
            steps=json.loads(raw.get("steps", "[]")),
            force=raw.get("force") == "1",
        )


class JobStore:
    def __init__(self, client: redis.Redis):
        self.r = client
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
        existing_id = self.r.get(self.dedupe_key(dedupe_key))
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
        pipe.zadd(self.state_key(State.RECEIVED), {job.id: now})
        pipe.set(keys.record_last_job(object_type, record_id), job.id, ex=JOB_META_TTL_S)
        created, *_ = pipe.execute()
        if not created:  # another request for the same event won the race
            self.delete(job.id)
            return self.get(self.r.get(self.dedupe_key(dedupe_key))), True
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
        pipe.zrem(keys.JOBS_HELD_UNTIL, job_id)
        for state in STATES:
            pipe.zrem(self.state_key(state), job_id)
        pipe.execute()

    # reading and transitions
    def get(self, job_id: str) -> Job | None:
        raw = self.r.hgetall(self.job_key(job_id))
        return Job.from_hash(raw) if raw else None

    def transition(self, job: Job, state: str, held_until: float | None = None, **changes: Any) -> Job:
        """Move the job to `state` (IllegalMove if the table forbids it),
        recording the step and any other changes in one write. A held state
        may say when the hold ends (`held_until`); the sweeper acts on it."""
        state = check_move(job.state, state)
        previous = job.state
        job.state = state
        job.updated_at = _now()
        job.steps.append({"state": state, "t": job.updated_at})
        for name, value in changes.items():
            setattr(job, name, value)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.job_key(job.id), mapping=self._to_hash(job))
        # The state index: one sorted set per state, scored by the time the
        # job entered it (counts per time window, trimmed by the sweeper).
        pipe.zrem(self.state_key(previous), job.id)
        pipe.zadd(self.state_key(state), {job.id: job.updated_at})
        if state in HELD and held_until is not None:
            pipe.zadd(keys.JOBS_HELD_UNTIL, {job.id: held_until})
        else:
            pipe.zrem(keys.JOBS_HELD_UNTIL, job.id)
        if state != previous and state not in HELD and state != State.RECEIVED:
            # Progress (not a hold, not a resume): the retry deadline and the
            # stuck-job count start again.
            pipe.hdel(self.job_key(job.id), "failing_since", "revivals")
        pipe.execute()
        if state in FINAL_STATES and previous not in FINAL_STATES:
            counters.incr(self.r, "jobs_finished", state=state, object=job.object)
            if state == State.DONE:
                counters.observe(self.r, "job_to_writeback_seconds", job.updated_at - job.created_at)
        return job

    def finish(self, job: Job, state: State, reason: str | None = None, **changes: Any) -> bool:
        """End the job in a final state with its reason, unless it has
        ended already (a late or repeated answer); True if it moved."""
        if job.final:
            return False
        self.transition(job, state, last_error=reason[:500] if reason else None, **changes)
        return True

    def finish_by_id(self, job_id: str, state: State, reason: str | None = None, **changes: Any) -> Job | None:
        """`finish` for a job known by id; the job, if it moved."""
        job = self.get(job_id)
        return job if job is not None and self.finish(job, state, reason, **changes) else None

    def note_error(self, job: Job, error: str) -> float:
        """Record a passing error without moving the job (it will be
        retried); answers how long the job has been failing since it last
        made progress."""
        job.last_error = error
        job.updated_at = _now()
        job.steps.append({"state": job.state, "t": job.updated_at})
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.job_key(job.id), mapping=self._to_hash(job))
        pipe.hsetnx(self.job_key(job.id), "failing_since", job.updated_at)
        pipe.hget(self.job_key(job.id), "failing_since")
        *_, since = pipe.execute()
        return job.updated_at - float(since or job.updated_at)

    def held_until(self, job_id: str) -> float | None:
        """When a held job's hold ends, if it said."""
        return self.r.zscore(keys.JOBS_HELD_UNTIL, job_id)

    def touch(self, job_id: str) -> None:
        self.r.hset(self.job_key(job_id), "updated_at", _now())

    def count_revival(self, job_id: str) -> int:
        return self.r.hincrby(self.job_key(job_id), "revivals", 1)

    def count_attempt(self, job: Job) -> int:
        job.attempts = self.r.hincrby(self.job_key(job.id), "attempts", 1)
        return job.attempts

    def ids_in_state(self, state: State) -> list[str]:
        return self.r.zrange(self.state_key(state), 0, -1)

    def counts_by_state(self, since: float | None = None) -> dict[str, int]:
        """Jobs per state (kept JOB_META_TTL_S), or only those that entered
        their state since `since`: one command per state either way."""
        pipe = self.r.pipeline()
        for state in STATES:
            if since is None:
                pipe.zcard(self.state_key(state))
            else:
                pipe.zcount(self.state_key(state), since, "+inf")
        return dict(zip(STATES, pipe.execute(), strict=True))

    def counts_per_bucket(self, state: State, start: float, bucket_s: float, buckets: int) -> list[int]:
        """Jobs that entered `state` in each of `buckets` windows from `start`."""
        pipe = self.r.pipeline()
        for i in range(buckets):
            pipe.zcount(self.state_key(state), start + i * bucket_s, f"({start + (i + 1) * bucket_s}")
        return pipe.execute()

    def newest_in_state(self, state: State, count: int) -> list[str]:
        return self.r.zrevrange(self.state_key(state), 0, count - 1)

    def trim_state_index(self, now: float | None = None) -> int:
        """Drop index entries older than the job hashes they point to."""
        cutoff = (now or time.time()) - JOB_META_TTL_S
        pipe = self.r.pipeline()
        for state in STATES:
            pipe.zremrangebyscore(self.state_key(state), "-inf", cutoff)
        return sum(pipe.execute())

    def migrate_state_index(self) -> int:
        """Turn the index of an older version (plain sets) into sorted sets,
        scored now; idempotent, run at start-up."""
        moved = 0
        for state in STATES:
            key = self.state_key(state)
            if self.r.type(key) != "set":
                continue
            members = self.r.smembers(key)
            pipe = self.r.pipeline(transaction=True)
            pipe.delete(key)
            if members:
                pipe.zadd(key, dict.fromkeys(members, _now()))
            pipe.execute()
            moved += len(members)
        return moved

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
            "last_error": job.last_error or "", "input": json.dumps(job.input),
            "fields_written": json.dumps(job.fields_written), "steps": json.dumps(job.steps),
            "force": int(job.force),
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
    return store.r.hgetall(tracked_key(object_type, record_id))


def save_tracked_hashes(store: JobStore, object_type: str, record_id: str, hashes: dict[str, str]) -> None:
    if hashes:
        key = tracked_key(object_type, record_id)
        pipe = store.r.pipeline(transaction=True)
        pipe.hset(key, mapping=hashes)
        pipe.expire(key, TRACKED_TTL_S)
        pipe.execute()
