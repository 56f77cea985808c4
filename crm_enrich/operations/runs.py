"""Re-runs and backfills: a run's record in Redis, the jobs it queues, and
how far it has got. A selection by SOQL condition is read by worker tasks
(worker/operation_tasks.py, with crm_enrich/operations/selection.py); new jobs
are only ever made through `flow.intake.accept_records`."""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

from crm_enrich import keys
from crm_enrich.flow import clearout_lists
from crm_enrich.flow.intake import Enqueue, InboundRecord, accept_records
from crm_enrich.jobs.state import FINAL
from crm_enrich.jobs.store import JobStore
from crm_enrich.queues import SELECT_RERUN_RECORDS
from crm_enrich.redis_typing import hash_fields

from .operator_input import RECONCILE_KIND, SOURCE_FOR_KIND, RerunRequest

# What a dry run answers (crm_enrich/operations/estimate.py), kept on its run.
ESTIMATE_FIELDS = ("records", "priced", "credits", "clearoutCredits", "estimatedCredits", "needs")

RUN_TTL_S = keys.RUN_TTL_S
run_key = keys.run
run_jobs_key = keys.run_jobs


def create_run(r: redis.Redis, req: RerunRequest, total: int | None, status: str) -> str:
    run_id = uuid.uuid4().hex
    mapping = {"object": req.object, "kind": req.kind, "total": total if total is not None else "",
               "queued": 0, "created_at": round(time.time(), 3), "status": status,
               "force": int(req.force), "dry_run": int(req.dry_run),
               "selection": "ids" if req.ids is not None else "where"}
    if req.limit is not None:  # kept so that its selection can be sent again (worker/reverify.py)
        mapping.update({"limit": req.limit, "order_by": req.order_by or "Id", "where": req.where or ""})
    pipe = r.pipeline(transaction=True)
    pipe.hset(run_key(run_id), mapping=hash_fields(mapping))
    pipe.expire(run_key(run_id), RUN_TTL_S)
    pipe.execute()
    return run_id


def queue_run_records(store: JobStore, enqueue: Enqueue, run_id: str, kind: str,
                      object_type: str, record_ids: list[str]) -> int:
    """Make (or find again) a job per record for this run; safe to repeat:
    the dedupe key is the run and the record. Answers how many are queued."""
    source = SOURCE_FOR_KIND.get(kind, "rerun")
    if kind == RECONCILE_KIND:
        record_ids = without_known_job(store, object_type, record_ids)
    force = store.r.hget(run_key(run_id), "force") == "1"
    result = accept_records(store, enqueue, [
        InboundRecord(dedupe_key=keys.run_record(run_id, rid), object_type=object_type,
                      record_id=rid, source=source, force=force)
        for rid in record_ids])
    job_ids = result.accepted + result.duplicates
    pipe = store.r.pipeline(transaction=True)
    if job_ids:
        pipe.sadd(run_jobs_key(run_id), *job_ids)
    pipe.expire(run_jobs_key(run_id), RUN_TTL_S)
    pipe.scard(run_jobs_key(run_id))
    *_, queued = pipe.execute()
    store.r.hset(run_key(run_id), "queued", queued)
    return queued


def without_known_job(store: JobStore, object_type: str, record_ids: list[str]) -> list[str]:
    """The records we have no job for: none in flight, none finished in the
    last days (a skipped or failed one is the operator's to re-run)."""
    if not record_ids:
        return []
    known = store.r.mget([keys.record_last_job(object_type, rid) for rid in record_ids])
    return [rid for rid, job_id in zip(record_ids, known, strict=True) if not job_id]


def start_rerun(store: JobStore, enqueue: Enqueue,
                send_task: Callable[[str, list], None], req: RerunRequest) -> dict:
    """Start a run, or a dry run that only prices the selection. A
    selection by condition, and any dry run, is handed to a worker task
    (the web never calls Salesforce): it reads the ids page by page, or
    reads the records a dry run prices."""
    if req.ids is not None and req.dry_run:
        run_id = create_run(store.r, req, total=len(req.ids), status="counting")
        pipe = store.r.pipeline(transaction=True)
        pipe.rpush(keys.run_ids(run_id), *req.ids)
        pipe.expire(keys.run_ids(run_id), RUN_TTL_S)
        pipe.execute()
        send_task(SELECT_RERUN_RECORDS, [run_id, req.object, None, None])
        return {"runId": run_id}
    if req.ids is not None:
        run_id = create_run(store.r, req, total=len(req.ids), status="queueing")
        queue_run_records(store, enqueue, run_id, req.kind, req.object, list(req.ids))
        store.r.hset(run_key(run_id), "status", "queued")
        return {"runId": run_id, "total": len(req.ids)}
    run_id = create_run(store.r, req, total=None, status="counting" if req.dry_run else "selecting")
    send_task(SELECT_RERUN_RECORDS, [run_id, req.object, req.where, None])
    return {"runId": run_id}


def get_run(store: JobStore, run_id: str) -> dict | None:
    raw = store.r.hgetall(run_key(run_id))
    if not raw:
        return None
    job_ids = list(store.r.sscan_iter(run_jobs_key(run_id), count=1000))
    pipe = store.r.pipeline()
    for job_id in job_ids:
        pipe.hget(JobStore.job_key(job_id), "state")
    by_state: dict[str, int] = {}
    for state in pipe.execute() if job_ids else []:
        by_state[state or "expired"] = by_state.get(state or "expired", 0) + 1
    total = int(raw["total"]) if raw.get("total") not in (None, "") else None
    status = raw.get("status", "")
    finished = sum(n for s, n in by_state.items() if s in FINAL or s == "expired")
    if status == "queued" and job_ids and finished == len(job_ids):
        status = "finished"
    out: dict[str, Any] = {
           "runId": run_id, "object": raw.get("object"), "kind": raw.get("kind"),
           "status": status, "total": total, "queued": int(raw.get("queued") or 0),
           "createdAt": float(raw["created_at"]) if raw.get("created_at") else None,
           "force": raw.get("force") == "1", "dryRun": raw.get("dry_run") == "1",
           "jobs": by_state, "finished": finished}
    if raw.get("error"):
        out["error"] = raw["error"]
    if raw.get("limit"):
        out["limit"] = int(raw["limit"])
    if raw.get("estimate"):
        out.update(json.loads(raw["estimate"]))
    lists = clearout_lists.list_view(store.r, run_id)
    if lists:
        out["clearoutLists"] = lists
    return out


def estimate_of(run: dict) -> dict:
    """A priced dry run's answer."""
    return {name: run[name] for name in ESTIMATE_FIELDS if name in run}
