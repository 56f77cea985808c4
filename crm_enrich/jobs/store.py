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
from crm_enrich.jobs.state import FINAL, HELD, STATES, JobMoved, SkipReason, State, check_move
from crm_enrich.logs import log, mask_text
from crm_enrich.redis_connection import AckDurability, redis_client
from crm_enrich.redis_typing import hash_fields, members, text_hash, text_set, texts
from crm_enrich.settings import Settings

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


# Compare and set: write the job's new hash and move it in the state index
# (sorted sets scored by the time the job entered each state) only if the
# stored state is still the one the caller read. Answers the stored state as
# it was (nil if the job is gone). KEYS: the job, the old state's set, the
# new one's, the held-until index. ARGV: expected state, job id, now, the
# hold's end or "", "1" when the move is progress (the retry deadline and
# the stuck-job count start again), then the hash's fields and values.
_MOVE = """
local stored = redis.call('HGET', KEYS[1], 'state')
if stored ~= ARGV[1] then return stored end
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
if ARGV[4] ~= '' then redis.call('ZADD', KEYS[4], ARGV[4], ARGV[2]) else redis.call('ZREM', KEYS[4], ARGV[2]) end
if ARGV[5] == '1' then redis.call('HDEL', KEYS[1], 'failing_since', 'revivals') end
return stored
"""


@dataclass(frozen=True)
class NewJob:
    """An event that should have a job, known by its dedupe key."""
    dedupe_key: str
    object_type: str
    record_id: str
    source: str
    input_fields: dict
    force: bool = False


@dataclass(frozen=True)
class Seen:
    job_id: str
    duplicate: bool   # the event's job was queued before


# Per job: claim its dedupe key (NX, or over the id of a job that is gone) and,
# only then, write the job, its state-set entry and the record's last job.
# ARGV[3]: a JSON array with, per job, [id, stale id or "", [field, value, ...]]
# (one argument: packing thousands of small ones cost more than the work).
# Answers, per job, the id now behind the dedupe key.
_CREATE_JOBS = """
local state_set, dedupe_ttl, meta_ttl, now = KEYS[1], ARGV[1], ARGV[2], ARGV[4]
local shared = cjson.decode(ARGV[3])
local jobs = cjson.decode(ARGV[5])
local out, created = {}, {}
for i, spec in ipairs(jobs) do
  local dedupe, job, last = KEYS[3 * i - 1], KEYS[3 * i], KEYS[3 * i + 1]
  local id, stale, own = spec[1], spec[2], spec[3]
  local claimed
  if stale ~= '' and redis.call('GET', dedupe) == stale then
    claimed = redis.call('SET', dedupe, id, 'EX', dedupe_ttl)
  else
    claimed = redis.call('SET', dedupe, id, 'NX', 'EX', dedupe_ttl)
  end
  if claimed then
    local fields = {}
    for _, part in ipairs(shared) do fields[#fields + 1] = part end
    for _, part in ipairs(own) do fields[#fields + 1] = part end
    redis.call('HSET', job, unpack(fields))
    redis.call('EXPIRE', job, meta_ttl)
    redis.call('SET', last, id, 'EX', meta_ttl)
    created[#created + 1] = now
    created[#created + 1] = id
    out[i] = id
  else
    out[i] = redis.call('GET', dedupe)
  end
end
-- One ZADD for all, in chunks that stay well inside unpack's limit.
for start = 1, #created, 400 do
  redis.call('ZADD', state_set, unpack(created, start, math.min(start + 399, #created)))
end
return out
"""

# The same field set on many hashes, in one command.
_SET_FIELD = """
for _, key in ipairs(KEYS) do redis.call('HSET', key, ARGV[1], ARGV[2]) end
return #KEYS
"""


# The fields in which one new job's hash differs from another's.
OWN_FIELDS = frozenset({"id", "object", "record_id", "source", "dedupe_key", "input", "force"})
# What Job.from_hash reads a missing field as (as _to_hash writes it).
UNSET = {"attempts": 0, "last_error": "", "fields_written": "[]", "fields_skipped": "{}",
         "provider_slots": "[]", "steps": "[]", "skip_reason": ""}


def _hash_parts(fields: dict) -> list[str]:
    """[name, value, ...] as strings, exactly what HSET from Python would write."""
    return [part for name, value in fields.items() for part in (name, value if isinstance(value, str) else repr(value))]


class JobStore:
    def __init__(self, client: redis.Redis, durability: AckDurability | None = None):
        self.r = client
        # What an acknowledged intake waits for (None: the write itself).
        self.durability = durability
        self._move = client.register_script(_MOVE)
        self._create = client.register_script(_CREATE_JOBS)
        self._set_field = client.register_script(_SET_FIELD)
        # A job's copy of provider data lives 24 h from the provider's answer,
        # whatever the response cache's own TTL (which may even be 0: off).
        self.provider_ttl_s = keys.PROVIDER_DATA_MAX_TTL_S

    @classmethod
    def from_url(cls, url: str, **kw) -> JobStore:
        return cls(redis.Redis.from_url(url, decode_responses=True, socket_timeout=5,
                                        socket_connect_timeout=2), **kw)

    @classmethod
    def from_settings(cls, settings: Settings) -> JobStore:
        """The store of REDIS_URL or of the Sentinels' master, with the
        durability an acknowledgement waits for."""
        return cls(redis_client(settings), AckDurability.from_settings(settings))

    def execute_acknowledged(self, pipe: redis.client.Pipeline) -> list:
        """Run the pipeline whose success a sender will be told of: when it
        returns, its writes and all before them are as durable as the
        settings ask (NotDurable, a RedisError, otherwise)."""
        if self.durability is None:
            return pipe.execute()
        return self.durability.execute(pipe, self.r)

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
        duplicate of one already queued (see `create_many_unless_seen`)."""
        (seen,) = self.create_many_unless_seen(
            [NewJob(dedupe_key, object_type, record_id, source, input_fields, force)], dedupe_ttl_s)
        job = self.get(seen.job_id)
        if job is None:  # expired between the two calls: nothing left to be a duplicate of
            raise redis.RedisError(f"job {seen.job_id} vanished while it was created")
        return job, seen.duplicate

    def create_many_unless_seen(self, new_jobs: list[NewJob], dedupe_ttl_s: int = DEDUPE_TTL_S) -> list[Seen]:
        """For each event, its job: made now, or the one already made for
        the same dedupe key (`duplicate` when that one was queued already).

        A job that was created but never made it onto the queue (Redis or
        the broker failed in between) is handed back as not duplicate, so the
        sender's retry queues it: an event is only remembered as seen once
        it is durably queued.

        Three round trips at most, whatever the number of events: one MGET
        of every dedupe key, one pipeline reading the jobs already made (a
        redelivery only), one script creating the rest. The script claims
        each dedupe key and writes its job in one step, so two requests for
        the same event racing each other make one job."""
        firsts: dict[str, int] = {}
        for i, new in enumerate(new_jobs):
            firsts.setdefault(new.dedupe_key, i)
        existing = self.r.mget([self.dedupe_key(new.dedupe_key) for new in new_jobs])
        out: list[Seen | None] = [None] * len(new_jobs)
        known = {i: str(job_id) for i, job_id in enumerate(existing)
                 if job_id and firsts[new_jobs[i].dedupe_key] == i}
        queued_at = self._enqueued_at(list(known.values()))
        stale: dict[int, str] = {}
        for i, job_id in known.items():
            if job_id in queued_at:
                out[i] = Seen(job_id, duplicate=queued_at[job_id] is not None)
            else:
                stale[i] = job_id  # the key outlived its job: make a new one
        to_create = [i for i, new in enumerate(new_jobs)
                     if out[i] is None and firsts[new.dedupe_key] == i]
        if to_create:
            now = _now()
            jobs = [Job(id=uuid.uuid4().hex, state=State.RECEIVED, object=new_jobs[i].object_type,
                        record_id=new_jobs[i].record_id, source=new_jobs[i].source, created_at=now,
                        updated_at=now, dedupe_key=new_jobs[i].dedupe_key, input=new_jobs[i].input_fields,
                        force=new_jobs[i].force) for i in to_create]
            script_keys = [self.state_key(State.RECEIVED)]
            # A new job's hash differs from another's only in these fields:
            # the rest (state, times, empty lists) is sent once for all.
            # Fields still at the value Job.from_hash assumes when one is
            # missing are left out: a new job's hash is half the size.
            shared = {name: value for name, value in self._to_hash(jobs[0]).items()
                      if name not in OWN_FIELDS and UNSET.get(name, object()) != value}
            specs, inputs = [], {}
            for i, job in zip(to_create, jobs, strict=True):
                script_keys += [self.dedupe_key(job.dedupe_key or ""), self.job_key(job.id),
                                keys.record_last_job(job.object, job.record_id)]
                # The events of one message carry the same input: dumped once.
                given = new_jobs[i].input_fields
                if id(given) not in inputs:
                    inputs[id(given)] = json.dumps(given)
                specs.append([job.id, stale.get(i, ""),
                              ["id", job.id, "object", job.object, "record_id", job.record_id,
                               "source", job.source, "dedupe_key", job.dedupe_key or "",
                               "input", inputs[id(given)], *(["force", "1"] if job.force else [])]])
            answers = self._create(keys=script_keys, args=[
                dedupe_ttl_s, JOB_META_TTL_S, json.dumps(_hash_parts(shared)), repr(now), json.dumps(specs)])
            lost = {}
            for i, job, answer in zip(to_create, jobs, answers, strict=True):
                if answer == job.id:
                    out[i] = Seen(job.id, duplicate=False)
                else:  # another request for the same event won the race
                    lost[i] = answer
            won = self._enqueued_at(list(lost.values()))
            for i, job_id in lost.items():
                out[i] = Seen(job_id, duplicate=won.get(job_id) is not None)
        for i, new in enumerate(new_jobs):  # the same event twice in one batch
            if out[i] is None:
                first = out[firsts[new.dedupe_key]]
                assert first is not None
                out[i] = Seen(first.job_id, duplicate=True)
        return [seen for seen in out if seen is not None]

    def _enqueued_at(self, job_ids: list[str]) -> dict[str, float | None]:
        """For each job that exists, when it was queued (None: not yet)."""
        if not job_ids:
            return {}
        pipe = self.r.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(self.job_key(job_id), "id", "enqueued_at")
        return {job_id: float(at) if at else None
                for job_id, (found, at) in zip(job_ids, pipe.execute(), strict=True) if found}

    def claim_dedupe_key(self, dedupe_key: str, job_id: str, ttl_s: int) -> bool:
        """Make a job that exists already the answer to `dedupe_key`, unless
        another job is."""
        return bool(self.r.set(self.dedupe_key(dedupe_key), job_id, nx=True, ex=ttl_s))

    def mark_enqueued(self, job_id: str) -> None:
        self.r.hset(self.job_key(job_id), "enqueued_at", _now())

    def mark_many_enqueued(self, pipe: redis.client.Pipeline, job_ids: list[str]) -> None:
        """Add to `pipe` the mark that these jobs are durably queued (one
        command for all: a hundred HSETs cost more to pack than to run)."""
        self._set_field(keys=[self.job_key(job_id) for job_id in job_ids], args=["enqueued_at", _now()],
                        client=pipe)

    def delete(self, job_id: str) -> None:
        pipe = self.r.pipeline()
        pipe.delete(self.job_key(job_id), self.provider_key(job_id))
        pipe.zrem(keys.JOBS_HELD_UNTIL, job_id)
        for state in STATES:
            pipe.zrem(self.state_key(state), job_id)
        pipe.execute()

    # reading and transitions
    def get(self, job_id: str) -> Job | None:
        raw = text_hash(self.r.hgetall(self.job_key(job_id)))
        return Job.from_hash(raw) if raw else None

    def transition(self, job: Job, state: str, held_until: float | None = None, **changes: Any) -> Job:
        """Move the job to `state`, recording the step and any other changes
        in one write. IllegalMove if the table forbids the move; JobMoved
        (and nothing written) if the stored job is no longer in the state
        this copy was read in: the flush, the sweeper and a task may each
        hold a copy, and the last writer must not undo an earlier move. A
        held state may say when the hold ends (`held_until`); the sweeper
        acts on it."""
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
        hold = held_until if target in HELD and held_until is not None else None
        progress = target != previous and target not in HELD and target != State.RECEIVED
        stored = self._move(
            keys=[self.job_key(job.id), self.state_key(previous), self.state_key(target), keys.JOBS_HELD_UNTIL],
            args=[previous, job.id, now, "" if hold is None else hold, "1" if progress else "0", *fields])
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

    def note_error(self, job: Job, error: str) -> float:
        """Record a passing error without moving the job (it will be
        retried; the state is left as the store holds it); answers how long
        the job has been failing since it last made progress."""
        job.last_error = error
        job.updated_at = _now()
        job.steps.append({"state": job.state, "t": job.updated_at})
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.job_key(job.id), mapping={"last_error": mask_text(error), "updated_at": job.updated_at,
                                                 "steps": json.dumps(job.steps)})
        pipe.hsetnx(self.job_key(job.id), "failing_since", job.updated_at)
        pipe.hget(self.job_key(job.id), "failing_since")
        *_, since = pipe.execute()
        return job.updated_at - float(since or job.updated_at)

    def note_step(self, job: Job, step: str, outcome: str) -> None:
        """Record a step within the job's state (a waterfall source asked,
        and what it answered) in the job's steps, for the job view."""
        job.updated_at = _now()
        job.steps.append({"state": job.state, "t": job.updated_at, "step": step, "outcome": outcome})
        self.r.hset(self.job_key(job.id), mapping={"updated_at": job.updated_at, "steps": json.dumps(job.steps)})

    def held_until(self, job_id: str) -> float | None:
        """When a held job's hold ends, if it said."""
        score = self.r.zscore(keys.JOBS_HELD_UNTIL, job_id)
        return float(score) if score is not None else None

    def touch(self, job_id: str) -> None:
        self.r.hset(self.job_key(job_id), "updated_at", _now())

    def count_revival(self, job_id: str) -> int:
        return int(self.r.hincrby(self.job_key(job_id), "revivals", 1))

    def count_attempt(self, job: Job) -> int:
        job.attempts = self.r.hincrby(self.job_key(job.id), "attempts", 1)
        return job.attempts

    def ids_in_state(self, state: State) -> list[str]:
        """Oldest first (by the time each job entered the state)."""
        return members(self.r.zrange(self.state_key(state), 0, -1))

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
        return members(self.r.zrevrange(self.state_key(state), 0, count - 1))

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
            old = text_set(self.r.smembers(key))
            pipe = self.r.pipeline(transaction=True)
            pipe.delete(key)
            if old:
                pipe.zadd(key, dict.fromkeys(old, _now()))
            pipe.execute()
            moved += len(old)
        return moved

    # provider data (≤ 24 h)
    def save_provider_data(self, job_id: str, name: str, value: Any, fetched_at: float | None = None,
                           pipe: redis.client.Pipeline | None = None) -> None:
        """The key expires `provider_ttl_s` after the oldest answer it holds
        was fetched (a cached answer brings its own, earlier, time). With
        `pipe`, the commands join it and run when the caller executes it."""
        key = self.provider_key(job_id)
        expire_at = int((fetched_at or time.time()) + self.provider_ttl_s)
        own = pipe is None
        pipe = self.r.pipeline(transaction=True) if pipe is None else pipe
        pipe.hset(key, name, json.dumps(value))
        pipe.expireat(key, expire_at, nx=True)
        pipe.expireat(key, expire_at, lt=True)
        if own:
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
