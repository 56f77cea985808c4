"""Dead letters: the failed jobs, listed for an operator, and replayed as
new jobs."""
from __future__ import annotations

import uuid

from crm_enrich import keys
from crm_enrich.flow.intake import Enqueue, InboundRecord, accept_records
from crm_enrich.jobs.state import State
from crm_enrich.jobs.store import JobStore
from crm_enrich.redis_typing import members

FAILED_LIST_LIMIT = 200
FAILED_SCAN_MAX = 20_000


def failed_jobs(store: JobStore, limit: int = FAILED_LIST_LIMIT, include_replayed: bool = True) -> list[dict]:
    """The newest failed jobs, read page by page from the state index (scored
    by the time each failed) until `limit` are found."""
    rows: list[dict] = []
    key = JobStore.state_key(State.FAILED)
    page = max(limit, 50)
    for offset in range(0, FAILED_SCAN_MAX, page):
        ids = members(store.r.zrevrange(key, offset, offset + page - 1))
        if not ids:
            break
        pipe = store.r.pipeline()
        for job_id in ids:
            pipe.hmget(JobStore.job_key(job_id), "object", "record_id", "last_error", "updated_at",
                       "state", "replayed_by")
        for job_id, (obj, rid, err, updated, state, replayed_by) in zip(ids, pipe.execute(), strict=True):
            if state != "failed" or (replayed_by and not include_replayed):
                continue
            rows.append({"id": job_id, "object": obj, "recordId": rid, "lastError": err or None,
                         "updatedAt": float(updated) if updated else None, "replayedBy": replayed_by or None})
        if len(rows) >= limit:
            break
    rows.sort(key=lambda row: row["updatedAt"] or 0, reverse=True)
    return rows[:limit]


def replay_failed(store: JobStore, enqueue: Enqueue, job_ids: list[str] | None) -> dict:
    """A new job (source "rerun") for each failed job given, or for every
    failed job not replayed yet. Jobs that are not failed are reported, not
    replayed."""
    if job_ids is None:
        job_ids = [row["id"] for row in failed_jobs(store, limit=FAILED_SCAN_MAX, include_replayed=False)]
    replayed, not_failed = {}, []
    for job_id in job_ids:
        job = store.get(job_id)
        if job is None or job.state != State.FAILED:
            not_failed.append(job_id)
            continue
        result = accept_records(store, enqueue, [InboundRecord(
            dedupe_key=keys.replay(job_id, uuid.uuid4().hex), object_type=job.object,
            record_id=job.record_id, source="rerun")])
        new_id = (result.accepted + result.duplicates)[0]
        store.r.hset(JobStore.job_key(job_id), "replayed_by", new_id)
        store.r.hset(JobStore.job_key(new_id), "replay_of", job_id)
        replayed[job_id] = new_id
    return {"replayed": len(replayed), "skipped": len(not_failed), "jobs": replayed,
            "notFailed": not_failed}
