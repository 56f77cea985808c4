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

def query_ids_page(gateway: SalesforceGateway, object_type: str, where: str | None,
                   next_url: str | None) -> tuple[list[str], int, str | None]:
    """One page of `SELECT Id FROM <object> WHERE <where>`: (ids, totalSize,
    nextRecordsUrl or None). The condition was validated by admin_ops; only
    a condition, never a whole query, comes from the operator."""
    if next_url:
        result = gateway._call(lambda sf: sf.query_more(next_url, identifier_is_url=True))
    else:
        soql = f"SELECT Id FROM {object_type}" + (f" WHERE {where}" if where else "")
        result = gateway._call(lambda sf: sf.query(soql))
    ids = [rec["Id"] for rec in result.get("records", [])]
    return ids, int(result.get("totalSize", len(ids))), (None if result.get("done", True)
                                                        else result.get("nextRecordsUrl"))


def _enqueue(job_id: str, source: str) -> None:
    current_app.send_task(ENRICH_RECORD, args=[job_id], queue=queue_for(source))


@shared_task(bind=True, name=admin_ops.SELECT_RERUN_RECORDS, max_retries=8)
def select_rerun_records(self, run_id: str, object_type: str, where: str | None,
                         next_url: str | None = None) -> int:
    """Read one page of the run's selection, queue a job per record, and
    hand the next page to a new task (each task stays short)."""
    svc = tasks.services()
    store, r = svc.store, svc.store.r
    run = r.hgetall(admin_ops.run_key(run_id))
    if not run:
        log.warning("run.missing", run_id=run_id)
        return 0
    dry_run = run.get("dry_run") == "1"
    if not dry_run and not svc.batches.guard.may_call(urgent=False):
        log.info("run.waiting_for_allocation", run_id=run_id)
        raise self.retry(countdown=ALLOCATION_WAIT_S, max_retries=None)
    try:
        ids, total, next_page = query_ids_page(svc.batches.salesforce, object_type, where, next_url)
    except SalesforceFailure as exc:
        if exc.retryable and self.request.retries < self.max_retries:
            raise self.retry(countdown=min(120, 2 ** (self.request.retries + 1)))
        r.hset(admin_ops.run_key(run_id), mapping={"status": "failed", "error": str(exc)[:500]})
        log.warning("run.selection_failed", run_id=run_id, error=exc.code)
        return 0
    r.hset(admin_ops.run_key(run_id), "total", total)
    if dry_run:
        r.hset(admin_ops.run_key(run_id), "status", "estimated")
        log.info("run.estimated", run_id=run_id, records=total)
        return total
    queued = admin_ops.queue_run_records(store, _enqueue, run_id, run.get("kind", "rerun"),
                                         object_type, ids)
    log.info("run.page_queued", run_id=run_id, page=len(ids), queued=queued, total=total)
    if next_page:
        current_app.send_task(admin_ops.SELECT_RERUN_RECORDS, args=[run_id, object_type, where, next_page])
    else:
        r.hset(admin_ops.run_key(run_id), "status", "queued")
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
