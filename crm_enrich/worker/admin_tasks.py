"""Worker side of the admin operations: selecting a re-run's records by SOQL
condition, page by page, and the worker heartbeat that /readyz checks.

Imported by crm_enrich.worker.main after the task modules.
"""
from __future__ import annotations

import os
import socket
import time

import redis
from celery import current_app, shared_task
from celery.signals import heartbeat_sent, worker_ready

from crm_enrich import admin_ops
from crm_enrich.logs import log
from crm_enrich.settings import get_settings
from crm_enrich.worker import tasks
from crm_enrich.worker.celery_app import ENRICH_RECORD, queue_for
from crm_enrich.worker.salesforce import SalesforceFailure, SalesforceGateway

HEARTBEAT = "crm_enrich.heartbeat"
HEARTBEAT_KEY = "worker:heartbeat"
HEARTBEAT_TTL_S = 120
HEARTBEAT_EVERY_S = 15.0

# Seconds to wait before reading the next page while the org's allocation
# only allows urgent work.
ALLOCATION_WAIT_S = 60


# ---------------------------------------------------------------------------
# Re-run selection
# ---------------------------------------------------------------------------
# The first task counts the selection (one SELECT COUNT() call). Up to
# SALESFORCE_BULK_QUERY_THRESHOLD records are read with REST query paging;
# more go through a Bulk API 2.0 query job: polled by re-scheduled tasks (no
# worker waits), then read set by set with its locator. Either way each page
# is one short task that queues a job per record and hands on the next page.
# Bulk locators, unlike REST query cursors (gone after 15 minutes idle),
# outlive a long wait for the API allocation. A capped run (a scheduled
# re-verification: the oldest N) is counted by whoever starts it and always
# read with REST paging: Bulk API 2.0 queries should not sort or limit.

POLL_RERUN_QUERY_JOB = admin_ops.POLL_RERUN_QUERY_JOB
READ_RERUN_QUERY_PAGE = admin_ops.READ_RERUN_QUERY_PAGE
QUERY_JOB_POLL_MAX_S = 30
QUERY_JOB_GIVE_UP_S = 2 * 3600


selection_soql = admin_ops.selection_soql


def _cap(run: dict) -> tuple[str | None, int | None]:
    """(order_by, limit) of a capped run, else (None, None)."""
    return (run.get("order_by"), int(run["limit"])) if run.get("limit") else (None, None)


def query_ids_page(gateway: SalesforceGateway, object_type: str, where: str | None,
                   next_url: str | None, order_by: str | None = None,
                   limit: int | None = None) -> tuple[list[str], int, str | None]:
    """One page of `SELECT Id FROM <object> WHERE <where>` (ordered and
    limited if asked): (ids, totalSize, nextRecordsUrl or None)."""
    if next_url:
        result = gateway._call(lambda sf: sf.query_more(next_url, identifier_is_url=True))
    else:
        soql = selection_soql("Id", object_type, where, order_by, limit)
        result = gateway._call(lambda sf: sf.query(soql))
    ids = [rec["Id"] for rec in result.get("records", [])]
    return ids, int(result.get("totalSize", len(ids))), (None if result.get("done", True)
                                                        else result.get("nextRecordsUrl"))


def _enqueue(job_id: str, source: str) -> None:
    current_app.send_task(ENRICH_RECORD, args=[job_id], queue=queue_for(source))


def _load_run(run_id: str):
    svc = tasks.services()
    run = svc.store.r.hgetall(admin_ops.run_key(run_id))
    if not run:
        log.warning("run.missing", run_id=run_id)
    return svc, run


def _wait_for_allocation(task, svc, run_id: str) -> None:
    """Above the bulk share of the org's allocation, selection waits (its
    retries are not used up)."""
    if not svc.batches.guard.may_call(urgent=False):
        log.info("run.waiting_for_allocation", run_id=run_id)
        raise task.retry(countdown=ALLOCATION_WAIT_S, max_retries=None)


def _fail_run(r, run_id: str, error: str, code: str) -> int:
    r.hset(admin_ops.run_key(run_id), mapping={"status": "failed", "error": error[:500]})
    log.warning("run.selection_failed", run_id=run_id, error=code)
    return 0


def _retry_or_fail(task, r, run_id: str, exc: SalesforceFailure) -> int:
    if exc.retryable and task.request.retries < task.max_retries:
        raise task.retry(countdown=min(120, 2 ** (task.request.retries + 1)))
    return _fail_run(r, run_id, str(exc), exc.code)


def _queue_page(svc, run_id: str, run: dict, object_type: str, ids: list[str], total: int | None,
                more: bool, via: str) -> None:
    queued = admin_ops.queue_run_records(svc.store, _enqueue, run_id, run.get("kind", "rerun"),
                                         object_type, ids)
    log.info("run.page_queued", run_id=run_id, page=len(ids), queued=queued, total=total, via=via)
    if not more:
        svc.store.r.hset(admin_ops.run_key(run_id), "status", "queued")


@shared_task(bind=True, name=admin_ops.SELECT_RERUN_RECORDS, max_retries=8)
def select_rerun_records(self, run_id: str, object_type: str, where: str | None,
                         next_url: str | None = None) -> int:
    """Count the run's selection (first call), or read one REST page of it
    and queue a job per record; the next page is a new task."""
    svc, run = _load_run(run_id)
    if not run:
        return 0
    r, gateway = svc.store.r, svc.batches.salesforce
    dry_run = run.get("dry_run") == "1"
    order_by, limit = _cap(run)
    if not dry_run:
        _wait_for_allocation(self, svc, run_id)
    try:
        if next_url is None and limit is None:
            total = gateway.count(selection_soql("COUNT()", object_type, where))
            r.hset(admin_ops.run_key(run_id), "total", total)
            if dry_run:
                r.hset(admin_ops.run_key(run_id), "status", "estimated")
                log.info("run.estimated", run_id=run_id, records=total)
                return total
            if total > svc.settings.salesforce_bulk_query_threshold:
                _start_query_job(svc, run_id, run, object_type, where, total)
                return 0
            if total == 0:
                r.hset(admin_ops.run_key(run_id), "status", "queued")
                return 0
        ids, total, next_page = query_ids_page(gateway, object_type, where, next_url, order_by, limit)
    except SalesforceFailure as exc:
        return _retry_or_fail(self, r, run_id, exc)
    r.hset(admin_ops.run_key(run_id), "total", total)
    _queue_page(svc, run_id, run, object_type, ids, total, more=bool(next_page), via="rest")
    if next_page:
        current_app.send_task(admin_ops.SELECT_RERUN_RECORDS, args=[run_id, object_type, where, next_page])
    return len(ids)


def _start_query_job(svc, run_id: str, run: dict, object_type: str, where: str | None, total: int) -> None:
    """Create the run's query job (once: a repeated task finds it in the
    run) and schedule its first poll."""
    job_id = run.get("query_job")
    if not job_id:
        job_id = svc.batches.salesforce.start_query_job(selection_soql("Id", object_type, where))
        svc.store.r.hset(admin_ops.run_key(run_id), mapping={"query_job": job_id, "query_job_at": time.time()})
    log.info("run.query_job_started", run_id=run_id, query_job=job_id, total=total)
    current_app.send_task(POLL_RERUN_QUERY_JOB, args=[run_id, object_type, job_id, 0], countdown=1)


@shared_task(bind=True, name=POLL_RERUN_QUERY_JOB, max_retries=8)
def poll_rerun_query_job(self, run_id: str, object_type: str, job_id: str, polls: int = 0) -> str | None:
    """One look at the run's query job: when complete, its first page is
    read; while it runs, this task is sent again a little later."""
    svc, run = _load_run(run_id)
    if not run:
        return None
    r = svc.store.r
    _wait_for_allocation(self, svc, run_id)
    try:
        info = svc.batches.salesforce.query_job(job_id)
    except SalesforceFailure as exc:
        _retry_or_fail(self, r, run_id, exc)
        return None
    state = info.get("state")
    if state == "JobComplete":
        current_app.send_task(READ_RERUN_QUERY_PAGE, args=[run_id, object_type, job_id, None])
    elif state in ("Failed", "Aborted"):
        _fail_run(r, run_id, f"query job {job_id} {state}: {info.get('errorMessage', '')}",
                  f"QUERY_JOB_{state.upper()}")
    elif time.time() - float(run.get("query_job_at") or 0) > QUERY_JOB_GIVE_UP_S:
        _fail_run(r, run_id, f"query job {job_id} still {state} after {QUERY_JOB_GIVE_UP_S} s", "QUERY_JOB_TIMEOUT")
    else:
        current_app.send_task(POLL_RERUN_QUERY_JOB, args=[run_id, object_type, job_id, polls + 1],
                              countdown=min(QUERY_JOB_POLL_MAX_S, 2 ** (polls + 1)))
    return state


@shared_task(bind=True, name=READ_RERUN_QUERY_PAGE, max_retries=8)
def read_rerun_query_page(self, run_id: str, object_type: str, job_id: str, locator: str | None = None) -> int:
    """One set of the finished query job's results: queue a job per record
    and hand the next locator to a new task."""
    svc, run = _load_run(run_id)
    if not run:
        return 0
    _wait_for_allocation(self, svc, run_id)
    try:
        rows, next_locator = svc.batches.salesforce.query_job_page(
            job_id, locator, svc.settings.salesforce_bulk_query_page_size)
    except SalesforceFailure as exc:
        return _retry_or_fail(self, svc.store.r, run_id, exc)
    ids = [row["Id"] for row in rows if row.get("Id")]
    total = int(run["total"]) if run.get("total") not in (None, "") else None
    _queue_page(svc, run_id, run, object_type, ids, total, more=bool(next_locator), via="bulk_query")
    if next_locator:
        current_app.send_task(READ_RERUN_QUERY_PAGE, args=[run_id, object_type, job_id, next_locator])
    return len(ids)


# ---------------------------------------------------------------------------
# Heartbeat
# ---------------------------------------------------------------------------

_last_beat = 0.0
_redis: tuple[int, redis.Redis] | None = None


def _heartbeat_redis() -> redis.Redis:
    global _redis
    if _redis is None or _redis[0] != os.getpid():
        _redis = (os.getpid(), redis.Redis.from_url(get_settings().redis_url, socket_timeout=5,
                                                    socket_connect_timeout=2))
    return _redis[1]


def write_heartbeat(source: str) -> None:
    """`worker:heartbeat` holds the time of the last sign of life; /readyz
    fails once it has expired."""
    global _last_beat
    try:
        _heartbeat_redis().set(HEARTBEAT_KEY, f"{time.time():.3f} {socket.gethostname()} {source}",
                                     ex=HEARTBEAT_TTL_S)
        _last_beat = time.monotonic()
    except Exception as exc:  # never let a heartbeat break the worker
        log.warning("worker.heartbeat_failed", error=type(exc).__name__)


@shared_task(name=HEARTBEAT, ignore_result=True, expires=HEARTBEAT_TTL_S)
def heartbeat() -> None:
    """Scheduled by beat: proves a pool process takes tasks."""
    write_heartbeat("task")


@worker_ready.connect
def _beat_on_ready(**_):
    write_heartbeat("ready")


@heartbeat_sent.connect
def _beat_with_celery(**_):
    """Celery's own event heartbeat (every 2 s in the worker's main process)
    keeps the key fresh even while the queue holds a long backlog."""
    if time.monotonic() - _last_beat >= HEARTBEAT_EVERY_S:
        write_heartbeat("event")


def _schedule_heartbeat() -> None:
    schedule = dict(current_app.conf.beat_schedule or {})
    schedule["worker-heartbeat"] = {"task": HEARTBEAT, "schedule": HEARTBEAT_EVERY_S,
                                    "options": {"expires": HEARTBEAT_EVERY_S * 2}}
    current_app.conf.beat_schedule = schedule


_schedule_heartbeat()
get_settings()  # fail at import, like the other task modules, if settings are bad
