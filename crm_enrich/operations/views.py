"""What an operator may see: a job, a record's last job, and the
dashboard's overview. Never provider data or a record's values, only which
provider answers a job holds."""
from __future__ import annotations

import re
import time
from typing import Any

import redis

from crm_enrich import keys
from crm_enrich.jobs.changes import ChangeLog
from crm_enrich.jobs.state import State
from crm_enrich.jobs.store import Job, JobStore
from crm_enrich.queues import URGENT_QUEUE
from crm_enrich.redis_typing import text
from crm_enrich.salesforce.api_guard import ApiGuard
from crm_enrich.salesforce.batch_queue import BatchQueue
from crm_enrich.salesforce.ids import OBJECTS, SF_ID, to_id18
from crm_enrich.salesforce.schema import load_field_map_check
from crm_enrich.settings import Settings

from .dead_letters import failed_jobs


def job_view(store: JobStore, job: Job) -> dict:
    """What an operator may see of a job: never provider data or the
    record's values, only which provider answers it holds."""
    provider = store.provider_data(job.id)
    # A final job's values are gone; the names of its slots stay on the job.
    slots = set(provider) | set(job.provider_slots)
    extra = store.r.hmget(JobStore.job_key(job.id), "replayed_by", "replay_of", "credits")
    # Results Clodura sends later: when each was asked for and whether it came.
    waits = [{"step": name.removeprefix("pending:"), "askedAt": value.get("sent_at"),
              "arrived": f"result:{name.removeprefix('pending:')}" in slots}
             for name, value in sorted(provider.items()) if name.startswith("pending:")]
    return {
        "id": job.id, "state": job.state, "object": job.object, "recordId": job.record_id,
        "source": job.source, "createdAt": job.created_at, "updatedAt": job.updated_at,
        "enqueuedAt": job.enqueued_at, "attempts": job.attempts, "lastError": job.last_error,
        # Why a skipped job was skipped (a SkipReason code); None otherwise.
        "skipReason": job.skip_reason,
        "fieldsWritten": job.fields_written,
        "fieldsSkipped": [{"field": name, "reason": reason} for name, reason in sorted(job.fields_skipped.items())],
        # A step within a state (a waterfall source asked) also says which, and what it answered.
        "steps": [{"state": s.get("state"), "at": s.get("t"),
                   **({"step": s["step"], "outcome": s.get("outcome")} if s.get("step") else {})}
                  for s in job.steps],
        "providerCalls": [k for k in sorted(slots) if k not in ("record", "outcome", "write")
                          and not k.startswith(("pending:", "result:"))],
        "asyncSteps": waits,
        "creditsSpent": round(float(extra[2] or 0), 2),
        "replayedBy": extra[0] or None, "replayOf": extra[1] or None,
    }


def get_job(store: JobStore, job_id: str) -> dict | None:
    if not re.fullmatch(r"[0-9a-f]{32}", job_id or ""):
        return None
    job = store.get(job_id)
    return job_view(store, job) if job else None


def get_record(store: JobStore, object_type: str, record_id: str, change_log: ChangeLog | None = None) -> dict | None:
    """The record's last job (kept 7 days) and its change log (kept
    CHANGE_LOG_DAYS), or None when there is neither."""
    if object_type not in OBJECTS or not SF_ID.match(record_id or ""):
        return None
    job_id = text(store.r.get(keys.record_last_job(object_type, to_id18(record_id)))) or \
        text(store.r.get(keys.record_last_job(object_type, record_id)))
    job = store.get(job_id) if job_id else None
    log = change_log or ChangeLog(store.r)
    found = log.of_record(object_type, to_id18(record_id)) or log.of_record(object_type, record_id)
    if job is None and not found:
        return None
    return {"object": object_type, "recordId": job.record_id if job else to_id18(record_id),
            "lastJob": job_view(store, job) if job else None,
            "changes": [{"at": entry["at"], "field": entry["field"], "rule": entry["rule"],
                         "source": entry["source"], "provider": entry["provider"], "was": entry["was"],
                         "jobId": entry["job_id"]} for entry in found]}


def throughput(store: JobStore, now: float | None = None, bucket_s: int = 300, window_s: int = 3600) -> list[dict]:
    """Jobs finished `done` per 5-minute bucket over the last hour: a count
    per bucket of the state index (scored by the time a job got there)."""
    now = now or time.time()
    start = now - window_s
    counts = store.counts_per_bucket(State.DONE, start, bucket_s, window_s // bucket_s)
    return [{"start": start + i * bucket_s, "done": n} for i, n in enumerate(counts)]


def credits_today(r: redis.Redis, provider: str = "clodura") -> dict:
    day = time.strftime("%Y-%m-%d", time.gmtime())
    spent, remaining = r.mget(keys.credits_spent(provider, day), keys.credits_remaining(provider))
    return {"provider": provider, "day": day,
            "spent": float(spent) if spent is not None else None,
            "remaining": float(remaining) if remaining is not None else None}


def rate_limit_headroom(r: redis.Redis, api_key: str, limits: list[tuple[int, int]],
                        now: float | None = None) -> list[dict]:
    """Per window of the Clodura plan: slots used in the window and left
    (by Redis's clock, which the limiter's windows are timed by)."""
    if now is None:
        seconds, micros = r.time()
        now = seconds + micros / 1e6
    out = []
    for limit, window in limits:
        used = r.zcount(keys.rate_limit_window(keys.clodura_limiter(api_key), window), now - window, "+inf")
        out.append({"window_s": window, "limit": limit, "used": used, "left": max(0, limit - used)})
    return out


def overview(store: JobStore, settings: Settings) -> dict[str, Any]:
    r = store.r
    usage = ApiGuard(r).usage()
    return {
        "generatedAt": time.time(),
        "states": store.counts_by_state(),
        "throughput": throughput(store),
        "queues": {URGENT_QUEUE: r.llen(URGENT_QUEUE),
                   **{name: BatchQueue(r, name).size() for name in (keys.SALESFORCE_READS, keys.SALESFORCE_WRITES)}},
        "salesforce": {"used": usage[0], "total": usage[1]} if usage else None,
        "credits": [credits_today(r, "clodura")],
        "rateLimits": rate_limit_headroom(r, settings.clodura_api_key, settings.clodura_limits),
        "failed": failed_jobs(store, limit=20),
        "fieldMapCheck": load_field_map_check(r),
    }
