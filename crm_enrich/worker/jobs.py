"""The job store: one Redis hash per job (state, times, attempts, last error,
Salesforce ids) and, apart from it, the provider data the job gathered.

Provider data lives in its own key whose TTL is set once, when the first
value is stored, and never extended: Clodura's policy allows keeping its
data for at most 24 hours (contracts/clodura.md §6).
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

import redis

from crm_enrich import counters

from crm_enrich.settings import PROVIDER_DATA_MAX_TTL_S

# received → enriching → awaiting_email → awaiting_phone → verifying →
# awaiting_verification → writing → done, with skipped / deferred / paused /
# failed on the side. The awaiting states wait for Clodura's callbacks.
STATES = (
    "received", "enriching", "awaiting_email", "awaiting_phone", "verifying", "awaiting_verification",
    "writing", "done", "skipped", "deferred", "paused", "failed",
)
FINAL_STATES = frozenset({"done", "skipped", "failed"})

JOB_META_TTL_S = 7 * 86_400        # job bookkeeping: ids, states, times; no provider data
DEDUPE_TTL_S = 2 * 86_400          # Salesforce retries an Outbound Message for up to 24 h


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
    def from_hash(cls, raw: dict[str, str]) -> "Job":
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
        self.provider_ttl_s = PROVIDER_DATA_MAX_TTL_S

    @classmethod
    def from_url(cls, url: str, **kw) -> "JobStore":
        return cls(redis.Redis.from_url(url, decode_responses=True, socket_timeout=5,
                                        socket_connect_timeout=2), **kw)

    # keys
    @staticmethod
    def job_key(job_id: str) -> str:
        return f"job:{job_id}"

    @staticmethod
    def provider_key(job_id: str) -> str:
        return f"job:{job_id}:provider"

    @staticmethod
    def dedupe_key(key: str) -> str:
        return f"dedupe:{key}"

    @staticmethod
    def state_key(state: str) -> str:
        return f"jobs:state:{state}"

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
        job = Job(id=uuid.uuid4().hex, state="received", object=object_type, record_id=record_id,
                  source=source, created_at=now, updated_at=now, dedupe_key=dedupe_key,
                  input=input_fields, force=force)
        pipe = self.r.pipeline(transaction=True)
        pipe.set(self.dedupe_key(dedupe_key), job.id, nx=True, ex=dedupe_ttl_s)
        pipe.hset(self.job_key(job.id), mapping=self._to_hash(job))
        pipe.expire(self.job_key(job.id), JOB_META_TTL_S)
        pipe.sadd(self.state_key("received"), job.id)
        pipe.set(f"record:{object_type}:{record_id}:last_job", job.id, ex=JOB_META_TTL_S)
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
        for state in STATES:
            pipe.srem(self.state_key(state), job_id)
        pipe.execute()

    # reading and transitions
    def get(self, job_id: str) -> Job | None:
        raw = self.r.hgetall(self.job_key(job_id))
        return Job.from_hash(raw) if raw else None

    def transition(self, job: Job, state: str, **changes) -> Job:
        if state not in STATES:
            raise ValueError(f"unknown state {state}")
        previous = job.state
        job.state = state
        job.updated_at = _now()
        job.steps.append({"state": state, "t": job.updated_at})
        for name, value in changes.items():
            setattr(job, name, value)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(self.job_key(job.id), mapping=self._to_hash(job))
        pipe.smove(self.state_key(previous), self.state_key(state), job.id)
        pipe.sadd(self.state_key(state), job.id)  # in case it was in no set
        pipe.execute()
        if state in FINAL_STATES and previous not in FINAL_STATES:
            counters.incr(self.r, "jobs_finished", state=state, object=job.object)
            if state == "done":
                counters.observe(self.r, "job_to_writeback_seconds", job.updated_at - job.created_at)
        return job

    def count_attempt(self, job: Job) -> int:
        job.attempts = self.r.hincrby(self.job_key(job.id), "attempts", 1)
        return job.attempts

    def counts_by_state(self) -> dict[str, int]:
        pipe = self.r.pipeline()
        for state in STATES:
            pipe.scard(self.state_key(state))
        return dict(zip(STATES, pipe.execute()))

    # provider data (≤ 24 h)
    def save_provider_data(self, job_id: str, name: str, value, fetched_at: float | None = None) -> None:
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


TRACKED_TTL_S = 400 * 86_400


def tracked_key(object_type: str, record_id: str) -> str:
    return f"tracked:{object_type}:{record_id}"


def load_tracked_hashes(store: JobStore, object_type: str, record_id: str) -> dict[str, str]:
    return store.r.hgetall(tracked_key(object_type, record_id))


def save_tracked_hashes(store: JobStore, object_type: str, record_id: str, hashes: dict[str, str]) -> None:
    if hashes:
        key = tracked_key(object_type, record_id)
        pipe = store.r.pipeline(transaction=True)
        pipe.hset(key, mapping=hashes)
        pipe.expire(key, TRACKED_TTL_S)
        pipe.execute()
