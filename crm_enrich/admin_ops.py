"""What an operator can do: re-run and backfill records, follow a run, look
at a job or a record, list and replay dead letters.

Plain functions over Redis, shared by the admin API (crm_enrich/web/admin.py),
the dashboard and, through the API, the command line. Nothing here calls
Salesforce or Clodura: a selection by SOQL condition is read by a worker task
(crm_enrich/worker/admin_tasks.py); new jobs are only ever made through
`intake.accept_records`.
"""
from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import redis

from crm_enrich.intake import InboundRecord, accept_records
from crm_enrich.worker.celery_app import REVERIFY_SOURCE
from crm_enrich.worker.jobs import FINAL_STATES, Job, JobStore

OBJECTS = ("Contact", "Lead", "Account")
SF_ID = re.compile(r"^[a-zA-Z0-9]{15}([a-zA-Z0-9]{3})?$")
MAX_IDS = 10_000
MAX_WHERE_CHARS = 4_000
RUN_KINDS = ("rerun", "backfill")  # what an operator may start
# Started by beat (crm_enrich/worker/reverify.py), never by an operator:
# its jobs only verify the email.
REVERIFY_KIND = "reverify"
SOURCE_FOR_KIND = {"rerun": "rerun", "backfill": "backfill", REVERIFY_KIND: REVERIFY_SOURCE}

# Clodura's prices (contracts/clodura.md): 2 credits per matched person,
# 0.04 per verified email. An estimate assumes every record is matched and
# has an email: the most a run can spend.
ENRICH_CREDITS = 2.0
VERIFY_CREDITS = 0.04
CREDITS_PER_RECORD = ENRICH_CREDITS + VERIFY_CREDITS

RUN_TTL_S = 7 * 86_400
FAILED_LIST_LIMIT = 200
FAILED_SCAN_MAX = 20_000
SELECT_RERUN_RECORDS = "crm_enrich.select_rerun_records"
# Large selections: a Bulk API 2.0 query job, polled, then read set by set.
POLL_RERUN_QUERY_JOB = "crm_enrich.poll_rerun_query_job"
READ_RERUN_QUERY_PAGE = "crm_enrich.read_rerun_query_page"

# Words that would change the query around the condition instead of being
# part of it (checked outside string literals).
_FORBIDDEN_WORDS = re.compile(r"\b(LIMIT|ORDER|OFFSET|GROUP|HAVING|FOR|UPDATE|VIEW|REFERENCE|WITH)\b",
                              re.IGNORECASE)
_STRING_LITERAL = re.compile(r"'(?:\\.|[^'\\])*'")


class InvalidRequest(ValueError):
    """Bad operator input: answered 400, nothing started."""


# ---------------------------------------------------------------------------
# Salesforce ids
# ---------------------------------------------------------------------------

def to_id18(record_id: str) -> str:
    """The case-insensitive 18-character form of a 15- or 18-character id."""
    if len(record_id) == 18:
        return record_id
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
    suffix = ""
    for chunk in range(3):
        bits = 0
        for i, ch in enumerate(record_id[chunk * 5:chunk * 5 + 5]):
            if "A" <= ch <= "Z":
                bits |= 1 << i
        suffix += alphabet[bits]
    return record_id + suffix


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class RerunRequest:
    object: str
    kind: str = "rerun"
    ids: tuple[str, ...] | None = None
    where: str | None = None
    force: bool = False
    dry_run: bool = False
    # A capped selection: the first `limit` records in `order_by` order
    # (always read with REST paging: Bulk API 2.0 queries should not sort
    # or limit).
    order_by: str | None = None
    limit: int | None = None


def validate_where(where) -> str:
    if not isinstance(where, str) or not where.strip():
        raise InvalidRequest("where must be a non-empty SOQL condition")
    if len(where) > MAX_WHERE_CHARS:
        raise InvalidRequest(f"where must be at most {MAX_WHERE_CHARS} characters")
    if ";" in where:
        raise InvalidRequest("where must not contain ';'")
    if any(ord(c) < 32 and c not in "\t\n\r" for c in where):
        raise InvalidRequest("where must not contain control characters")
    outside = _STRING_LITERAL.sub("''", where)
    if "'" in outside.replace("''", ""):
        raise InvalidRequest("where has an unterminated string literal")
    word = _FORBIDDEN_WORDS.search(outside)
    if word:
        raise InvalidRequest(f"where must be a condition only; {word.group(1).upper()} is not allowed")
    return where.strip()


def selection_soql(select: str, object_type: str, where: str | None, order_by: str | None = None,
                   limit: int | None = None) -> str:
    """The query of a selection by condition. Only a condition (checked by
    validate_where), never a whole query, comes from an operator; ordering
    and a limit are ours (a capped run such as a scheduled re-verification)."""
    soql = f"SELECT {select} FROM {object_type}" + (f" WHERE {where}" if where else "")
    if limit is not None:
        soql += f" ORDER BY {order_by or 'Id'} LIMIT {int(limit)}"
    return soql


def parse_rerun(payload, kind: str = "rerun") -> RerunRequest:
    """Strict validation of a re-run or backfill request body."""
    if not isinstance(payload, dict):
        raise InvalidRequest("body must be a JSON object")
    unknown = set(payload) - {"object", "ids", "where", "force", "dryRun", "kind"}
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    kind = payload.get("kind", kind)
    if kind not in RUN_KINDS:
        raise InvalidRequest(f"kind must be one of {list(RUN_KINDS)}")
    object_type = payload.get("object")
    if object_type not in OBJECTS:
        raise InvalidRequest(f"object must be one of {list(OBJECTS)}")
    for flag in ("force", "dryRun"):
        if flag in payload and not isinstance(payload[flag], bool):
            raise InvalidRequest(f"{flag} must be true or false")
    has_ids, has_where = "ids" in payload, "where" in payload
    if has_ids and has_where:
        raise InvalidRequest("give exactly one of ids or where")
    if not has_ids and not has_where:
        if kind != "backfill":
            raise InvalidRequest("give exactly one of ids or where")
        return RerunRequest(object=object_type, kind=kind, force=payload.get("force", False),
                            dry_run=payload.get("dryRun", False))  # a backfill of every record
    ids = where = None
    if has_ids:
        raw = payload["ids"]
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_IDS:
            raise InvalidRequest(f"ids must be a list of 1 to {MAX_IDS} Salesforce ids")
        for i, value in enumerate(raw):
            if not isinstance(value, str) or not SF_ID.match(value):
                raise InvalidRequest(f"ids[{i}] must be a 15- or 18-character Salesforce id")
        ids = tuple(dict.fromkeys(to_id18(v) for v in raw))
    else:
        where = validate_where(payload["where"])
    return RerunRequest(object=object_type, kind=kind, ids=ids, where=where,
                        force=payload.get("force", False), dry_run=payload.get("dryRun", False))


def estimate(records: int) -> dict:
    return {"records": records, "estimatedCredits": round(records * CREDITS_PER_RECORD, 2)}


# ---------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------

def run_key(run_id: str) -> str:
    return f"run:{run_id}"


def run_jobs_key(run_id: str) -> str:
    return f"run:{run_id}:jobs"


def create_run(r: redis.Redis, req: RerunRequest, total: int | None, status: str) -> str:
    run_id = uuid.uuid4().hex
    mapping = {"object": req.object, "kind": req.kind, "total": total if total is not None else "",
               "queued": 0, "created_at": round(time.time(), 3), "status": status,
               "force": int(req.force), "dry_run": int(req.dry_run),
               "selection": "ids" if req.ids is not None else "where"}
    if req.limit is not None:  # kept so that its selection can be sent again (worker/reverify.py)
        mapping.update({"limit": req.limit, "order_by": req.order_by or "Id", "where": req.where or ""})
    pipe = r.pipeline(transaction=True)
    pipe.hset(run_key(run_id), mapping=mapping)
    pipe.expire(run_key(run_id), RUN_TTL_S)
    pipe.execute()
    return run_id


def queue_run_records(store: JobStore, enqueue: Callable[[str, str], None], run_id: str, kind: str,
                      object_type: str, record_ids: list[str]) -> int:
    """Make (or find again) a job per record for this run; safe to repeat:
    the dedupe key is the run and the record. Answers how many are queued."""
    source = SOURCE_FOR_KIND.get(kind, "rerun")
    force = store.r.hget(run_key(run_id), "force") == "1"
    result = accept_records(store, enqueue, [
        InboundRecord(dedupe_key=f"rerun:{run_id}:{rid}", object_type=object_type,
                      record_id=rid, fields={}, source=source, force=force)
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


def start_rerun(store: JobStore, enqueue: Callable[[str, str], None],
                send_task: Callable[[str, list], None], req: RerunRequest) -> dict:
    """Start a run (or, for a dry run by ids, only estimate it). A selection
    by condition is handed to a worker task that reads the ids page by page."""
    if req.ids is not None:
        if req.dry_run:
            return estimate(len(req.ids))
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
    finished = sum(n for s, n in by_state.items() if s in FINAL_STATES or s == "expired")
    if status == "queued" and job_ids and finished == len(job_ids):
        status = "finished"
    out = {"runId": run_id, "object": raw.get("object"), "kind": raw.get("kind"),
           "status": status, "total": total, "queued": int(raw.get("queued") or 0),
           "createdAt": float(raw["created_at"]) if raw.get("created_at") else None,
           "force": raw.get("force") == "1", "dryRun": raw.get("dry_run") == "1",
           "jobs": by_state, "finished": finished}
    if raw.get("error"):
        out["error"] = raw["error"]
    if raw.get("limit"):
        out["limit"] = int(raw["limit"])
    if out["dryRun"] and total is not None:
        out.update(estimate(total))
    return out


# ---------------------------------------------------------------------------
# Jobs and records
# ---------------------------------------------------------------------------

def job_view(store: JobStore, job: Job) -> dict:
    """What an operator may see of a job: never provider data or the
    record's values, only which provider answers it holds."""
    provider = store.provider_data(job.id)
    extra = store.r.hmget(JobStore.job_key(job.id), "replayed_by", "replay_of", "credits")
    # Results Clodura sends later: when each was asked for and whether it came.
    waits = [{"step": name.removeprefix("pending:"), "askedAt": value.get("sent_at"),
              "arrived": f"result:{name.removeprefix('pending:')}" in provider}
             for name, value in sorted(provider.items()) if name.startswith("pending:")]
    return {
        "id": job.id, "state": job.state, "object": job.object, "recordId": job.record_id,
        "source": job.source, "createdAt": job.created_at, "updatedAt": job.updated_at,
        "enqueuedAt": job.enqueued_at, "attempts": job.attempts, "lastError": job.last_error,
        "fieldsWritten": job.fields_written,
        "steps": [{"state": s.get("state"), "at": s.get("t")} for s in job.steps],
        "providerCalls": [k for k in sorted(provider) if k not in ("record", "outcome")
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


def get_record(store: JobStore, object_type: str, record_id: str) -> dict | None:
    if object_type not in OBJECTS or not SF_ID.match(record_id or ""):
        return None
    job_id = store.r.get(f"record:{object_type}:{to_id18(record_id)}:last_job") or \
        store.r.get(f"record:{object_type}:{record_id}:last_job")
    job = store.get(job_id) if job_id else None
    if job is None:
        return None
    return {"object": object_type, "recordId": job.record_id, "lastJob": job_view(store, job)}


# ---------------------------------------------------------------------------
# Dead letters
# ---------------------------------------------------------------------------

def failed_jobs(store: JobStore, limit: int = FAILED_LIST_LIMIT, include_replayed: bool = True) -> list[dict]:
    ids = []
    for job_id in store.r.sscan_iter(JobStore.state_key("failed"), count=1000):
        ids.append(job_id)
        if len(ids) >= FAILED_SCAN_MAX:
            break
    pipe = store.r.pipeline()
    for job_id in ids:
        pipe.hmget(JobStore.job_key(job_id), "object", "record_id", "last_error", "updated_at",
                   "state", "replayed_by")
    rows = []
    for job_id, (obj, rid, err, updated, state, replayed_by) in zip(ids, pipe.execute() if ids else []):
        if state != "failed" or (replayed_by and not include_replayed):
            continue
        rows.append({"id": job_id, "object": obj, "recordId": rid, "lastError": err or None,
                     "updatedAt": float(updated) if updated else None, "replayedBy": replayed_by or None})
    rows.sort(key=lambda row: row["updatedAt"] or 0, reverse=True)
    return rows[:limit]


def parse_replay(payload) -> list[str] | None:
    """The job ids to replay, or None for all of them."""
    if not isinstance(payload, dict):
        raise InvalidRequest("body must be a JSON object")
    unknown = set(payload) - {"jobIds", "all"}
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    if "all" in payload:
        if payload["all"] is not True or "jobIds" in payload:
            raise InvalidRequest('give either {"all": true} or {"jobIds": [...]}')
        return None
    job_ids = payload.get("jobIds")
    if not isinstance(job_ids, list) or not 1 <= len(job_ids) <= MAX_IDS:
        raise InvalidRequest(f"jobIds must be a list of 1 to {MAX_IDS} job ids")
    for i, job_id in enumerate(job_ids):
        if not isinstance(job_id, str) or not re.fullmatch(r"[0-9a-f]{32}", job_id):
            raise InvalidRequest(f"jobIds[{i}] is not a job id")
    return list(dict.fromkeys(job_ids))


def replay_failed(store: JobStore, enqueue: Callable[[str, str], None], job_ids: list[str] | None) -> dict:
    """A new job (source "rerun") for each failed job given, or for every
    failed job not replayed yet. Jobs that are not failed are reported, not
    replayed."""
    if job_ids is None:
        job_ids = [row["id"] for row in failed_jobs(store, limit=FAILED_SCAN_MAX, include_replayed=False)]
    replayed, not_failed = {}, []
    for job_id in job_ids:
        job = store.get(job_id)
        if job is None or job.state != "failed":
            not_failed.append(job_id)
            continue
        result = accept_records(store, enqueue, [InboundRecord(
            dedupe_key=f"replay:{job_id}:{uuid.uuid4().hex}", object_type=job.object,
            record_id=job.record_id, fields={}, source="rerun")])
        new_id = (result.accepted + result.duplicates)[0]
        store.r.hset(JobStore.job_key(job_id), "replayed_by", new_id)
        store.r.hset(JobStore.job_key(new_id), "replay_of", job_id)
        replayed[job_id] = new_id
    return {"replayed": len(replayed), "skipped": len(not_failed), "jobs": replayed,
            "notFailed": not_failed}


# ---------------------------------------------------------------------------
# Overview (dashboard)
# ---------------------------------------------------------------------------

def throughput(store: JobStore, now: float | None = None, bucket_s: int = 300, window_s: int = 3600,
               scan_max: int = 50_000) -> list[dict]:
    """Jobs finished `done` per 5-minute bucket over the last hour, from the
    jobs' updated_at (bounded scan of jobs:state:done)."""
    now = now or time.time()
    start = now - window_s
    buckets = [0] * (window_s // bucket_s)
    batch: list[str] = []

    def count(ids):
        pipe = store.r.pipeline()
        for job_id in ids:
            pipe.hget(JobStore.job_key(job_id), "updated_at")
        for updated in pipe.execute():
            if updated and start <= float(updated) <= now:
                buckets[min(len(buckets) - 1, int((float(updated) - start) // bucket_s))] += 1

    seen = 0
    for job_id in store.r.sscan_iter(JobStore.state_key("done"), count=1000):
        batch.append(job_id)
        seen += 1
        if len(batch) >= 1000:
            count(batch)
            batch = []
        if seen >= scan_max:
            break
    if batch:
        count(batch)
    return [{"start": start + i * bucket_s, "done": n} for i, n in enumerate(buckets)]


def credits_today(r: redis.Redis, provider: str = "clodura") -> dict:
    day = time.strftime("%Y-%m-%d", time.gmtime())
    spent, remaining = r.mget(f"credits:{provider}:spent:{day}", f"credits:{provider}:remaining")
    return {"provider": provider, "day": day,
            "spent": float(spent) if spent is not None else None,
            "remaining": float(remaining) if remaining is not None else None}


def rate_limit_headroom(r: redis.Redis, api_key: str, limits: list[tuple[int, int]],
                        now: float | None = None) -> list[dict]:
    """Per window of the Clodura plan: slots used in the window and left."""
    now = now or time.time()
    out = []
    for limit, window in limits:
        used = r.zcount(f"ratelimit:clodura:{api_key[-6:]}:{window}s", now - window, "+inf")
        out.append({"window_s": window, "limit": limit, "used": used, "left": max(0, limit - used)})
    return out


def overview(store: JobStore, settings) -> dict:
    from crm_enrich.worker.api_guard import ApiGuard
    from crm_enrich.worker.batching import BatchQueue

    r = store.r
    usage = ApiGuard(r).usage()
    return {
        "generatedAt": time.time(),
        "states": store.counts_by_state(),
        "throughput": throughput(store),
        "queues": {"enrich": r.llen("enrich"),
                   **{name: BatchQueue(r, name).size() for name in ("salesforce_reads", "salesforce_writes")}},
        "salesforce": {"used": usage[0], "total": usage[1]} if usage else None,
        "credits": [credits_today(r, "clodura")],
        "rateLimits": rate_limit_headroom(r, settings.clodura_api_key, settings.clodura_limits),
        "failed": failed_jobs(store, limit=20),
    }
