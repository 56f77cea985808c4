"""Batched Salesforce reads and writes: one SOQL query per up to 200 records
to read, one sObject Collections call per up to 200 records to write.

Jobs that need a read or a write put an item in a BatchQueue and park. A
flush sends a batch as soon as 200 items wait or the oldest has waited
WRITEBACK_MAX_DELAY_S, handles every record's own result, and wakes the
jobs. Whatever Salesforce did not accept for a passing reason is retried
later; nothing is dropped.
"""
from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from crm_enrich.backoff import backoff_s
from crm_enrich.field_map import value_hash
from crm_enrich.jobs.state import State
from crm_enrich.jobs.store import JobStore, save_tracked_hashes
from crm_enrich.logs import log
from crm_enrich.queues import FLUSH_READS, FLUSH_WRITES
from crm_enrich.salesforce.api_guard import ApiGuard
from crm_enrich.salesforce.batch_queue import Batch, BatchQueue
from crm_enrich.salesforce.gateway import SalesforceFailure, SalesforceGateway

# Per-record statusCodes (docs/salesforce.md#collections-errors).
TRANSIENT = {"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "REQUEST_RUNNING_TOO_LONG"}
RECORD_GONE = {"ENTITY_IS_DELETED", "NOT_FOUND", "INVALID_CROSS_REFERENCE_KEY"}
LIMIT_PAUSE_S = 15 * 60
MAX_ITEM_ATTEMPTS = 6


@dataclass
class BatchServices:
    store: JobStore
    salesforce: SalesforceGateway
    guard: ApiGuard
    reads: BatchQueue
    writes: BatchQueue
    max_delay_s: float
    schedule: Callable[[str, float], None]          # (task name, countdown)
    resume_job: Callable[[str], None]               # re-run a parked job's task
    usage_recheck_s: float = 60.0


# -- producers ---------------------------------------------------------------

def _queued(queue: BatchQueue, svc: BatchServices, task: str, waiting: int) -> None:
    if waiting >= queue.max_batch:
        svc.schedule(task, 0)
    elif queue.claim_flush_slot(svc.max_delay_s):
        svc.schedule(task, svc.max_delay_s)


def queue_read(svc: BatchServices, job_id: str, object_type: str, record_id: str,
               fields: list[str], urgent: bool) -> None:
    item = {"job_id": job_id, "object": object_type, "record_id": record_id, "fields": fields,
            "urgent": urgent, "queued_at": time.time(), "attempt": 0}
    _queued(svc.reads, svc, FLUSH_READS, svc.reads.add(item))


def queue_write(svc: BatchServices, job_id: str, object_type: str, record_id: str,
                changes: dict, tracked_fields: list[str], urgent: bool) -> None:
    item = {"job_id": job_id, "object": object_type, "record_id": record_id, "changes": changes,
            "tracked": tracked_fields, "urgent": urgent, "queued_at": time.time(), "attempt": 0}
    # An older write of the same record waiting for its retry would land
    # after this one, with older values: it is folded in instead (this
    # item's values win) and its jobs finish with this write.
    for older in svc.writes.take_delayed(lambda other: (other["object"], other["record_id"])
                                         == (object_type, record_id)):
        item["changes"] = {**older["changes"], **item["changes"]}
        item["tracked"] = sorted(set(item["tracked"]) | set(older["tracked"]))
        item["absorbed"] = [*item.get("absorbed", []), *jobs_of(older)]
        item["urgent"] = item["urgent"] or older["urgent"]
    _queued(svc.writes, svc, FLUSH_WRITES, svc.writes.add(item))


def jobs_of(item: dict) -> list[str]:
    """The job an item was queued for, and those of older items it absorbed."""
    return [item["job_id"], *item.get("absorbed", [])]


# -- the flush loop ------------------------------------------------------------

def _seconds_until_ready(svc: BatchServices, queue: BatchQueue) -> float:
    """0 when a batch should go now: 200 waiting, a retry due, or the oldest
    item has waited max_delay_s. Else how long to wait."""
    if svc.guard.paused_for() > 0:
        return svc.guard.paused_for()
    if not _guard_allows(svc, urgent=True):
        return svc.usage_recheck_s
    due_in = queue.next_due_in()
    if due_in == 0:
        return 0.0
    waiting = queue.r.llen(queue.pending)
    if waiting >= queue.max_batch:
        return 0.0
    if waiting:
        oldest = queue.r.lindex(queue.pending, 0)
        age = time.time() - json.loads(oldest)["queued_at"]
        return max(0.0, svc.max_delay_s - age)
    return due_in if due_in is not None else -1.0  # -1: nothing at all


def drain(svc: BatchServices, queue: BatchQueue, task: str,
          send: Callable[[BatchServices, BatchQueue, Batch], None], max_batches: int = 10) -> int:
    token = queue.acquire()
    if token is None:
        # Another flusher holds the lease. If it is alive it schedules what
        # follows; if it died, someone must come back when its lease ends.
        lease_left = queue.lease_left_s()
        if queue.claim_flush_slot(lease_left):
            svc.schedule(task, lease_left)
        return 0
    sent = 0
    try:
        queue.r.delete(queue.scheduled)
        while sent < max_batches:
            wait = _seconds_until_ready(svc, queue)
            if wait != 0:
                break
            batch = queue.take()
            if batch is None:
                break
            send(svc, queue, batch)
            sent += 1
    finally:
        queue.release(token)
    wait = _seconds_until_ready(svc, queue)
    if wait >= 0 and queue.claim_flush_slot(max(wait, 0.05)):
        svc.schedule(task, wait)
    return sent


def _guard_allows(svc: BatchServices, urgent: bool) -> bool:
    """Whether the org's allocation lets this kind of work call now. When it
    does not, the reading is refreshed now and then with one call to
    /limits/: the rolling 24 h count only falls with time."""
    if svc.guard.may_call(urgent):
        return True
    if svc.guard.paused_for() > 0 or svc.guard.reading_age_s() < svc.usage_recheck_s:
        return False
    try:
        svc.salesforce.refresh_usage()
    except SalesforceFailure:
        return False
    return svc.guard.may_call(urgent)


def _hold_back_bulk(svc: BatchServices, batch: Batch) -> tuple[list[dict], list[tuple[dict, float]]]:
    """Above the bulk share of the allocation, only new records' work goes
    out; backfills and re-runs wait (their attempts are not counted)."""
    if _guard_allows(svc, urgent=False):
        return batch.items, []
    now_items = [item for item in batch.items if item.get("urgent")]
    held = [(item, svc.usage_recheck_s) for item in batch.items if not item.get("urgent")]
    return now_items, held


def _retry_later(item: dict, reason: str) -> tuple[dict, float]:
    item = {**item, "attempt": item["attempt"] + 1, "last_error": reason}
    return item, backoff_s(item["attempt"], base=1.0, cap=60.0)


# -- writes ------------------------------------------------------------------

def flush_writes(svc: BatchServices) -> int:
    return drain(svc, svc.writes, FLUSH_WRITES, _send_writes)


def _send_writes(svc: BatchServices, queue: BatchQueue, batch: Batch) -> None:
    items, held = _hold_back_bulk(svc, batch)
    if not items:
        queue.done(batch, held)
        return
    # One entry per record: several finished jobs for the same record are
    # merged in queue order, so the last value wins.
    merged: OrderedDict[tuple[str, str], list[dict]] = OrderedDict()
    for item in items:
        merged.setdefault((item["object"], item["record_id"]), []).append(item)
    records = []
    for (object_type, record_id), record_items in merged.items():
        fields = {}
        for item in record_items:
            fields.update(item["changes"])
        records.append({"attributes": {"type": object_type}, "id": record_id, **fields})

    try:
        results = svc.salesforce.update_collection(records)
    except SalesforceFailure as exc:
        _whole_batch_failed(svc, queue, batch, exc, items, held)
        return
    retry = list(held)
    for record_items, result in zip(merged.values(), results, strict=False):
        if result.get("success"):
            for item in record_items:
                _write_done(svc, item)
            continue
        error = (result.get("errors") or [{}])[0]
        code, message = error.get("statusCode", "UNKNOWN"), error.get("message", "")
        for item in record_items:
            if code == "REQUEST_LIMIT_EXCEEDED":
                svc.guard.pause(LIMIT_PAUSE_S)
                retry.append((item, LIMIT_PAUSE_S))
            elif code in TRANSIENT and item["attempt"] + 1 < MAX_ITEM_ATTEMPTS:
                retry.append(_retry_later(item, code))
            else:
                _write_refused(svc, item, code, message)
    queue.done(batch, retry)
    log.info("salesforce.write_batch", records=len(records), jobs=len(items), retried=len(retry))


def _whole_batch_failed(svc: BatchServices, queue: BatchQueue, batch: Batch, exc: SalesforceFailure,
                        items: list[dict], held: list[tuple[dict, float]]) -> None:
    if exc.code == "REQUEST_LIMIT_EXCEEDED":
        svc.guard.pause(LIMIT_PAUSE_S)
        queue.done(batch, held + [(item, LIMIT_PAUSE_S) for item in items])
    elif exc.retryable:
        queue.done(batch, held + [_retry_later(item, exc.code) for item in items])
    else:
        for item in items:
            for job_id in jobs_of(item):
                svc.store.finish_by_id(job_id, State.FAILED, f"Salesforce refused the call: {exc}")
        queue.done(batch, held)
    log.warning("salesforce.batch_failed", queue=queue.name, items=len(items), code=exc.code)


def _write_done(svc: BatchServices, item: dict) -> None:
    store = svc.store
    tracked = {f: value_hash(v) for f, v in item["changes"].items() if f in item["tracked"]}
    save_tracked_hashes(store, item["object"], item["record_id"], tracked)
    for job_id in jobs_of(item):
        job = store.finish_by_id(job_id, State.DONE, fields_written=sorted(item["changes"]))
        if job is not None:
            log.info("job.done", job_id=job.id, record_id=job.record_id, fields=sorted(item["changes"]))


def _write_refused(svc: BatchServices, item: dict, code: str, message: str) -> None:
    for job_id in jobs_of(item):
        if code in RECORD_GONE:
            job = svc.store.finish_by_id(job_id, State.SKIPPED, f"record gone: {code}")
        else:
            job = svc.store.finish_by_id(job_id, State.FAILED, f"{code}: {message}")
        if job is not None:
            log.info("job.write_refused", job_id=job.id, record_id=job.record_id, code=code, state=job.state)


# -- reads -------------------------------------------------------------------

def flush_reads(svc: BatchServices) -> int:
    return drain(svc, svc.reads, FLUSH_READS, _send_reads)


def _send_reads(svc: BatchServices, queue: BatchQueue, batch: Batch) -> None:
    items, held = _hold_back_bulk(svc, batch)
    if not items:
        queue.done(batch, held)
        return
    by_object: dict[str, list[dict]] = {}
    for item in items:
        by_object.setdefault(item["object"], []).append(item)
    found: dict[str, dict] = {}
    try:
        for object_type, object_items in by_object.items():
            fields = sorted({f for item in object_items for f in item["fields"]})
            ids = sorted({item["record_id"] for item in object_items})
            found.update(svc.salesforce.read_records(object_type, ids, fields))
    except SalesforceFailure as exc:
        _whole_batch_failed(svc, queue, batch, exc, items, held)
        return
    for item in items:
        record = found.get(item["record_id"])
        svc.store.save_provider_data(item["job_id"], "record", record or {"_missing": True})
    # Jobs first, then the batch: a flusher dying in between leaves the batch
    # to be read again (a job queued twice runs once, under its lock), never
    # a read whose jobs nobody wakes.
    for item in items:
        svc.resume_job(item["job_id"])
    queue.done(batch, held)
    log.info("salesforce.read_batch", records=len(items), objects=sorted(by_object))
