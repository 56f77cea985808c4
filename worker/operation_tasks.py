"""The operator's tasks: reading a re-run's selection page by page
(crm_enrich.operations.selection) and the scheduled re-verification
(crm_enrich.operations.reverify)."""
from __future__ import annotations

import contextlib
import json
from collections.abc import Callable

from celery import current_app, shared_task
from redis.exceptions import LockError

from crm_enrich import keys
from crm_enrich.backoff import backoff_s
from crm_enrich.flow.record import fields_to_read
from crm_enrich.flow.services import Services
from crm_enrich.logs import log
from crm_enrich.operations import estimate, reconcile, refresh, reverify, runs, selection
from crm_enrich.operations.reverify import SendTask
from crm_enrich.queues import (
    POLL_RERUN_QUERY_JOB,
    READ_RERUN_QUERY_PAGE,
    RECONCILE,
    REFRESH_OLD_RECORDS,
    REVERIFY_OLD_EMAILS,
    SELECT_RERUN_RECORDS,
)
from crm_enrich.redis_typing import texts
from crm_enrich.salesforce.gateway import SalesforceFailure
from crm_enrich.salesforce.soql import selection_soql

from .services import enqueue_many, services


def _send(name: str, args: list, countdown: float | None = None) -> None:
    current_app.send_task(name, args=args, countdown=_bounded(countdown))


def _bounded(countdown: float | None) -> float | None:
    """No delayed message outlives half the broker's visibility timeout."""
    return None if countdown is None else min(countdown, services().settings.max_countdown_s)


def _load_run(run_id: str) -> tuple[Services, dict]:
    svc = services()
    run = svc.store.r.hgetall(runs.run_key(run_id))
    if not run:
        log.warning("run.missing", run_id=run_id)
    return svc, run


def _wait_for_allocation(task, svc: Services, run_id: str) -> None:
    """Above the bulk share of the org's allocation, selection waits (its
    retries are not used up)."""
    if not svc.batches.guard.may_call(urgent=False):
        log.info("run.waiting_for_allocation", run_id=run_id)
        raise task.retry(countdown=_bounded(selection.ALLOCATION_WAIT_S), max_retries=None)


def _retry_or_fail(task, svc: Services, run_id: str, exc: SalesforceFailure) -> int:
    if exc.retryable and task.request.retries < task.max_retries:
        raise task.retry(countdown=_bounded(backoff_s(task.request.retries, cap=120, jitter=False)))
    return selection.fail_run(svc.store, run_id, str(exc), exc.code)


@shared_task(bind=True, name=SELECT_RERUN_RECORDS, max_retries=8)
def select_rerun_records(self, run_id: str, object_type: str, where: str | None,
                         next_url: str | None = None) -> int:
    """Count the run's selection (first call), or read one REST page of it
    and queue a job per record; the next page is a new task."""
    svc, run = _load_run(run_id)
    if not run:
        return 0
    r, gateway = svc.store.r, svc.batches.salesforce
    if run.get("dry_run") == "1":
        try:
            return _price_dry_run(svc, run_id, run, object_type, where)
        except SalesforceFailure as exc:
            return _retry_or_fail(self, svc, run_id, exc)
    order_by, limit = selection.cap(run)
    _wait_for_allocation(self, svc, run_id)
    try:
        if next_url is None and limit is None:
            total = gateway.count(selection_soql("COUNT()", object_type, where))
            r.hset(runs.run_key(run_id), "total", total)
            if total > svc.settings.salesforce_bulk_query_threshold:
                job_id = selection.start_query_job(svc.store, gateway, run_id, run, object_type, where, total)
                _send(POLL_RERUN_QUERY_JOB, [run_id, object_type, job_id, 0], countdown=1)
                return 0
            if total == 0:
                r.hset(runs.run_key(run_id), "status", "queued")
                return 0
        ids, total, next_page = selection.query_ids_page(gateway, object_type, where, next_url, order_by, limit)
    except SalesforceFailure as exc:
        return _retry_or_fail(self, svc, run_id, exc)
    r.hset(runs.run_key(run_id), "total", total)
    selection.queue_page(svc.store, enqueue_many, run_id, run, object_type, ids, total, more=bool(next_page),
                         via="rest")
    if next_page:
        _send(SELECT_RERUN_RECORDS, [run_id, object_type, where, next_page])
    return len(ids)


def _price_dry_run(svc: Services, run_id: str, run: dict, object_type: str, where: str | None) -> int:
    """Count the selection (or take its ids), read up to ESTIMATE_READ_MAX
    of its records and price them (crm_enrich/operations/estimate.py)."""
    r, gateway = svc.store.r, svc.batches.salesforce
    fields = fields_to_read(svc, object_type)
    limit = svc.settings.estimate_read_max
    if run.get("selection") == "ids":
        ids = texts(r.lrange(keys.run_ids(run_id), 0, -1))
        read: list[dict] = []
        total, looked_up = len(ids), min(len(ids), limit)
        for start in range(0, min(total, limit), 200):
            chunk = ids[start:min(start + 200, limit)]
            read.extend(gateway.read_records(object_type, chunk, fields).values())
    else:
        total, looked_up = gateway.count(selection_soql("COUNT()", object_type, where)), None
        read, page = [], gateway.query_page(selection_soql(", ".join(fields), object_type, where, "Id", limit)) \
            if limit and total else None
        while page is not None:
            read.extend(estimate.flattened(row) for row in page.get("records", []))
            page = None if page.get("done", True) else gateway.query_page(next_url=page["nextRecordsUrl"])
    priced = estimate.price_selection(svc, object_type, run.get("kind", "rerun"), run.get("force") == "1",
                                      total, read, looked_up)
    r.hset(runs.run_key(run_id), mapping={"total": total, "estimate": json.dumps(priced), "status": "estimated"})
    log.info("run.estimated", run_id=run_id, records=total, priced=priced["priced"], **priced["credits"])
    return total


@shared_task(bind=True, name=POLL_RERUN_QUERY_JOB, max_retries=8)
def poll_rerun_query_job(self, run_id: str, object_type: str, job_id: str, polls: int = 0) -> str | None:
    """One look at the run's query job: when complete, its first page is
    read; while it runs, this task is sent again a little later."""
    svc, run = _load_run(run_id)
    if not run:
        return None
    _wait_for_allocation(self, svc, run_id)
    try:
        info = svc.batches.salesforce.query_job(job_id)
    except SalesforceFailure as exc:
        _retry_or_fail(self, svc, run_id, exc)
        return None
    move = selection.query_job_next(svc.store, run_id, run, job_id, info)
    if move == "read":
        _send(READ_RERUN_QUERY_PAGE, [run_id, object_type, job_id, None])
    elif move == "poll":
        _send(POLL_RERUN_QUERY_JOB, [run_id, object_type, job_id, polls + 1],
              countdown=backoff_s(polls, cap=selection.QUERY_JOB_POLL_MAX_S, jitter=False))
    return info.get("state")


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
        return _retry_or_fail(self, svc, run_id, exc)
    ids = [row["Id"] for row in rows if row.get("Id")]
    total = int(run["total"]) if run.get("total") not in (None, "") else None
    selection.queue_page(svc.store, enqueue_many, run_id, run, object_type, ids, total, more=bool(next_locator),
                         via="bulk_query")
    if next_locator:
        _send(READ_RERUN_QUERY_PAGE, [run_id, object_type, job_id, next_locator])
    return len(ids)


def _scheduled_trigger(task, svc: Services, turned_on: bool, start: Callable[[Services, SendTask], dict], *,
                       lock_key: str, lock_timeout_s: float, last_key: str, counter: str, event: str) -> str:
    """One trigger of a scheduled capped run (re-verification, refresh), one
    at a time: two at once (a redelivery meeting the next beat) would both
    see no open run and select the same records. A retryable Salesforce
    failure retries the task; any other ends the trigger as failed. What it
    did is recorded under `last_key` and counted in `counter`."""
    if not turned_on:
        return "off"
    lock = svc.store.r.lock(lock_key, timeout=lock_timeout_s, blocking=False)
    if not lock.acquire():
        return "busy"
    try:
        try:
            result = start(svc, lambda name, args: _send(name, args))
        except SalesforceFailure as exc:
            if exc.retryable and task.request.retries < task.max_retries:
                raise task.retry(countdown=_bounded(backoff_s(task.request.retries, cap=60, jitter=False))) from None
            result = {"outcome": "failed", "error": str(exc)[:300]}
        reverify.record_trigger(svc.store.r, result, last_key, counter)
    finally:
        with contextlib.suppress(LockError):  # expired meanwhile: someone else's now
            lock.release()
    log.info(event, outcome=result["outcome"], allowance=result.get("allowance"),
             selected=result.get("selected"), runs=result.get("runs"))
    return result["outcome"]


@shared_task(bind=True, name=REFRESH_OLD_RECORDS, max_retries=5)
def refresh_old_records(self) -> str:
    """The scheduled refresh (crm_enrich/operations/refresh.py)."""
    svc = services()
    return _scheduled_trigger(
        self, svc, svc.settings.refresh_after_days is not None, refresh.start_refresh,
        lock_key=keys.REFRESH_LOCK, lock_timeout_s=refresh.LOCK_TIMEOUT_S, last_key=refresh.LAST_KEY,
        counter="refresh_triggers", event="refresh.triggered")


@shared_task(bind=True, name=REVERIFY_OLD_EMAILS, max_retries=5)
def reverify_old_emails(self) -> str:
    """The scheduled re-verification (crm_enrich/operations/reverify.py)."""
    svc = services()
    return _scheduled_trigger(
        self, svc, svc.settings.reverify_after_days is not None, reverify.start_reverify,
        lock_key=keys.REVERIFY_LOCK, lock_timeout_s=reverify.LOCK_TIMEOUT_S, last_key=reverify.LAST_KEY,
        counter="reverify_triggers", event="reverify.triggered")


@shared_task(name=RECONCILE)
def reconcile_unenriched() -> str:
    """Queue the records created lately that nothing enriched (their
    Outbound Message lost, their job lost with a Redis)."""
    result = reconcile.start_reconcile(services(), lambda name, args: _send(name, args))
    return result["outcome"]
