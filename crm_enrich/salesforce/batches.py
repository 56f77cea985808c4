"""Batched Salesforce reads and writes: one SOQL query per up to 200 records
to read, one sObject Collections call per up to 200 records to write.

Jobs that need a read or a write put an item in a BatchQueue and park. A
flush handles every record's own result and wakes the jobs. Whatever
Salesforce did not accept for a passing reason is retried later; nothing
is dropped.

When a batch goes is Nagle's algorithm with a cork: an item that comes
alone (after a pause in arrivals, no flush running, no cork) is sent at
once, since waiting would gain nothing. While items arrive faster than
flushes complete, they accumulate until 200 wait, the oldest has waited
WRITEBACK_MAX_DELAY_S, or arrivals pause for BATCH_QUIET_S (or a flush's
duration, if longer). A cork holds batches back when more is known to be
coming: a message's fan-out corks the reads, a read batch of several jobs
corks the writes, and a Contact's write waits for its Account's (they share
one sObject Collections call, which takes mixed object types).

Queue items hold ids and field names only. The values a write plans live
on the job (its provider data, gone within 24 h), and a write may go out
long after its record was read (a reveal or a 202 verification can take an
hour), so the write flush reads the planned fields again (one query per
object in the batch, like a read batch) and sends only what the field
map's rules still allow: a person's edit meanwhile is never overwritten.
"""
from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crm_enrich.backoff import backoff_s
from crm_enrich.field_map import is_blank, rule_allows, value_hash
from crm_enrich.jobs.changes import ChangeLog
from crm_enrich.jobs.state import SkipReason, State
from crm_enrich.jobs.store import JobStore, load_tracked_hashes, save_tracked_hashes
from crm_enrich.logs import log
from crm_enrich.queues import FLUSH_READS, FLUSH_WRITES
from crm_enrich.salesforce.api_guard import ApiGuard
from crm_enrich.salesforce.batch_queue import BULK, URGENT, Added, Batch, BatchQueue
from crm_enrich.salesforce.gateway import SalesforceFailure, SalesforceGateway
from crm_enrich.salesforce.schema import OrgSchema

# Per-record statusCodes (docs/salesforce.md#collections-errors).
TRANSIENT = {"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "REQUEST_RUNNING_TOO_LONG"}
RECORD_GONE = {"ENTITY_IS_DELETED", "NOT_FOUND", "INVALID_CROSS_REFERENCE_KEY"}
LIMIT_PAUSE_S = 15 * 60
MAX_ITEM_ATTEMPTS = 6
WRITE = "write"   # the job's slot for the write it plans: values, rules
READ_AT = "_read_at"   # in a job's record: when the batched read fetched it
CHANGED_MEANWHILE = "changed in Salesforce after it was read"
OTHER_EMAIL = "verifies an address the record no longer has"


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
    change_log: ChangeLog | None = None             # None: the defaults (90 days)
    # The org's fields, so the write flush re-reads only fields that exist.
    schema: OrgSchema | None = None
    # A plan made from a read younger than this is written without a second
    # read (WRITEBACK_REREAD_AFTER_S); 0: always read again.
    reread_after_s: float = 0.0
    quiet_s: float = 0.25   # a pause in arrivals this long ends a burst
    # The longest a burst's batch waits for its named batch mates (BATCH_BURST_MAX_S).
    burst_max_s: float = 60.0


# A job in one of these states may still queue an item: a read (until it
# has one), a write (until it writes; a writing job's cork went when its
# item came). A job elsewhere (parked for a callback, held, ended) is not
# waited for.
STILL_COMING = {"reads": frozenset({State.RECEIVED}),
                "writes": frozenset({State.RECEIVED, State.ENRICHING, State.VERIFYING, State.WRITING})}
CORK_RECHECK_S = 1.0   # how often a batch waiting for named jobs looks at their states


# -- producers ---------------------------------------------------------------

def _quiet_s(svc: BatchServices, queue: BatchQueue) -> float:
    """How long a pause in arrivals ends a burst: BATCH_QUIET_S, or the
    last flush's duration if longer (items arriving faster than flushes
    complete), never more than the longest wait."""
    return min(svc.max_delay_s, max(svc.quiet_s, queue.last_flush_s()))


def _queued(queue: BatchQueue, svc: BatchServices, task: str, added: Added) -> None:
    if added.waiting >= queue.max_batch:
        svc.schedule(task, 0)
        return
    quiet = _quiet_s(svc, queue)
    alone = added.gap_s >= quiet and not added.corked and not queue.flushing()
    if alone or (added.uncorked and not added.corked):
        svc.schedule(task, 0)   # nothing to wait for: send now
    elif queue.claim_flush_slot(quiet):
        svc.schedule(task, quiet)  # look again once arrivals may have paused


def queue_read(svc: BatchServices, job_id: str, object_type: str, record_id: str,
               fields: list[str], urgent: bool) -> None:
    item = {"job_id": job_id, "object": object_type, "record_id": record_id, "fields": fields,
            "urgent": urgent, "queued_at": time.time(), "attempt": 0}
    _queued(svc.reads, svc, FLUSH_READS, svc.reads.add(item))


def queue_write(svc: BatchServices, job_id: str, object_type: str, record_id: str,
                changes: dict, rules: dict[str, str], urgent: bool,
                verified_email: str | None = None, verification_fields: tuple[str, ...] = (),
                why: dict | None = None, read_at: float | None = None, partner_job: str | None = None) -> None:
    """Plan a write: the values and each field's rule on the job (24 h at
    most), its ids and field names in the queue. `verification_fields` are
    written only while the record's Email is still `verified_email`. `why`:
    per field, what the change log keeps of it (rule, source, provider,
    was); never a value. `partner_job`: a job whose write should share this
    one's call (a Contact's and its Account's), still on its way; the queue
    waits for it WRITEBACK_MAX_DELAY_S at most."""
    plan: dict[str, Any] = {"changes": changes, "rules": rules, "verified_email": verified_email,
            "verification_fields": [f for f in verification_fields if f in changes], "why": why or {},
            "read_at": read_at}
    item: dict[str, Any] = {"job_id": job_id, "object": object_type, "record_id": record_id,
                            "fields": sorted(changes), "urgent": urgent, "queued_at": time.time(), "attempt": 0}
    # An older write of the same record waiting for its retry would land
    # after this one, with older values: it is folded in instead (this
    # item's values win) and its jobs finish with this write.
    for older in svc.writes.take_delayed(lambda other: (other["object"], other["record_id"])
                                         == (object_type, record_id)):
        older_plan = _plans(svc, [older])[older["job_id"]] or {}
        for part in ("changes", "rules", "why"):
            plan[part] = {**older_plan.get(part, {}), **plan[part]}
        plan["verification_fields"] = sorted(set(plan["verification_fields"])
                                             | set(older_plan.get("verification_fields", [])))
        plan["read_at"] = min(filter(None, (plan["read_at"], older_plan.get("read_at"))), default=None)
        item["fields"] = sorted(set(item["fields"]) | set(older["fields"]))
        item["absorbed"] = [*item.get("absorbed", []), *jobs_of(older)]
        item["urgent"] = item["urgent"] or older["urgent"]
    svc.store.save_provider_data(job_id, WRITE, plan)
    _queued(svc.writes, svc, FLUSH_WRITES, svc.writes.add(item, hold_for=partner_job, hold_s=svc.max_delay_s))


def expect_jobs(svc: BatchServices, queue: BatchQueue, job_ids: list[str], urgent: bool) -> None:
    """These jobs will each queue an item here soon (a message's records,
    a read batch's jobs): the lane's batch waits for all of them, or for
    those of them still on their way, BATCH_BURST_MAX_S at most. So a flood
    is read and written 200 records a call however long its enrichment
    takes (within that bound), while a job that parks for a callback holds
    nobody back."""
    queue.expect(job_ids, svc.burst_max_s, URGENT if urgent else BULK)


def expect_with(svc: BatchServices, job_id: str, other_job: str) -> None:
    """`other_job` (an Account's, queued by a Contact's job) is awaited by
    the writes wherever `job_id` is: it belongs to the same burst."""
    for lane in (URGENT, BULK):
        until = svc.writes.is_expected(job_id, lane)
        if until is not None:
            svc.writes.expect([other_job], max(0.0, until - time.time()), lane)


def _prune_corks(svc: BatchServices, queue: BatchQueue, lane: str) -> bool:
    """Drop the corks of jobs no longer on their way to this queue; True
    while some job cork still holds the lane."""
    corks = queue.expected_jobs(lane)
    if not corks:
        return False
    pipe = svc.store.r.pipeline(transaction=False)
    for job_id in corks.values():
        pipe.hget(svc.store.job_key(job_id), "state")
    coming = STILL_COMING["reads" if queue is svc.reads else "writes"]
    gone = [cork for cork, state in zip(corks, pipe.execute(), strict=True) if state not in coming]
    queue.uncork(gone)
    return len(gone) < len(corks)


def jobs_of(item: dict) -> list[str]:
    """The job an item was queued for, and those of older items it absorbed."""
    return [item["job_id"], *item.get("absorbed", [])]


# -- the flush loop ------------------------------------------------------------

def _seconds_until_ready(svc: BatchServices, queue: BatchQueue) -> float:
    """0 when a batch should go now: 200 waiting, a retry due, no named
    batch mate on its way and the oldest item has waited max_delay_s, or
    nothing is worth waiting for (no cork, and arrivals have paused). Else
    how long to wait."""
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
        if oldest is None:  # another flusher emptied the list since LLEN
            return due_in if due_in is not None else -1.0
        # New records' work waiting? Then only its own lane's corks and
        # arrivals count, and bulk items ride along in its batch.
        lane = URGENT if queue.urgent_waiting() else BULK
        if _prune_corks(svc, queue, lane):
            # Named batch mates still on their way: wait for them past the
            # oldest item's WRITEBACK_MAX_DELAY_S (their corks end by
            # BATCH_BURST_MAX_S), looking at their states now and then.
            return min(queue.cork_left_s(lane), CORK_RECHECK_S)
        left = svc.max_delay_s - (time.time() - json.loads(oldest)["queued_at"])
        if left <= 0:
            return 0.0
        cork_left = queue.cork_left_s(lane)
        if cork_left > 0:
            return min(cork_left, left)
        quiet = _quiet_s(svc, queue)
        since, gap = queue.arrivals(lane)
        if since >= quiet or gap >= quiet:   # arrivals paused, or the last one came alone
            return 0.0
        return min(quiet - since, left)
    return due_in if due_in is not None else -1.0  # -1: nothing at all


def drain(svc: BatchServices, queue: BatchQueue, task: str,
          send: Callable[[BatchServices, BatchQueue, Batch], None], max_batches: int = 10) -> int:
    token = queue.acquire()
    if token is None:
        # Another flusher holds the lease. If it is alive it schedules what
        # follows (so the next flush's slot is left to it); if it died,
        # someone must come back when its lease ends.
        lease_left = queue.lease_left_s()
        if queue.claim_recovery_slot(lease_left):
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
            started = time.monotonic()
            send(svc, queue, batch)
            queue.note_flush_time(time.monotonic() - started)
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
    item = {**_queued_form(item), "attempt": item["attempt"] + 1, "last_error": reason}
    return item, backoff_s(item["attempt"], base=1.0, cap=60.0)


# -- writes ------------------------------------------------------------------

def flush_writes(svc: BatchServices) -> int:
    return drain(svc, svc.writes, FLUSH_WRITES, _send_writes)


def _send_writes(svc: BatchServices, queue: BatchQueue, batch: Batch) -> None:
    items, held = _hold_back_bulk(svc, batch)
    if not items:
        queue.done(batch, held)
        return
    plans = _plans(svc, items)
    fresh = {item["job_id"] for item in items if _fresh(svc, plans[item["job_id"]])}
    try:
        current = _read_again(svc, [item for item in items if item["job_id"] not in fresh], plans)
    except SalesforceFailure as exc:
        _whole_batch_failed(svc, queue, batch, exc, items, held)
        return
    # One entry per record: several finished jobs for the same record are
    # merged in queue order, so the last value wins.
    merged: OrderedDict[tuple[str, str], list[dict]] = OrderedDict()
    for item in items:
        plan = plans[item["job_id"]]
        if plan is None:
            for job_id in jobs_of(item):
                svc.store.finish_by_id(job_id, State.FAILED,
                                       "the planned values expired (kept 24 h at most) before the write")
            continue
        # Tracked and always fields are remembered by hash once written: the
        # tracked rule needs it, and the change log tells ours from a person's.
        item["tracked"] = [name for name, rule in plan["rules"].items() if rule in ("tracked", "always")]
        item["why"] = plan.get("why") or {}
        if item["job_id"] in fresh:
            # Planned from a read seconds ago: written as planned.
            item["changes"], item["skipped"] = dict(plan["changes"]), {}
        else:
            record = current.get(item["record_id"])
            if record is None:
                svc.store.finish_by_id(item["job_id"], State.SKIPPED, SkipReason.RECORD_GONE,
                                       detail="not found when read again")
                continue
            tracked = load_tracked_hashes(svc.store, item["object"], item["record_id"])
            item["changes"], item["skipped"] = still_wanted(plan, record, tracked)
        if not item["changes"]:
            _write_done(svc, item)
            continue
        merged.setdefault((item["object"], item["record_id"]), []).append(item)
    # Records of one object together: Salesforce saves a mixed call in
    # per-type chunks, at most 10 a call (docs/salesforce.md#sobject-collections).
    by_object = sorted(merged.items(), key=lambda entry: entry[0][0])
    records = []
    for (object_type, record_id), record_items in by_object:
        fields = {}
        for item in record_items:
            fields.update(item["changes"])
        records.append({"attributes": {"type": object_type}, "id": record_id, **fields})
    if not records:
        queue.done(batch, held)
        return

    try:
        results = svc.salesforce.update_collection(records)
    except SalesforceFailure as exc:
        _whole_batch_failed(svc, queue, batch, exc, [i for group in merged.values() for i in group], held)
        return
    retry = list(held)
    for (_, record_items), result in zip(by_object, results, strict=False):
        if result.get("success"):
            for item in record_items:
                _write_done(svc, item)
            continue
        error = (result.get("errors") or [{}])[0]
        code, message = error.get("statusCode", "UNKNOWN"), error.get("message", "")
        for item in record_items:
            if code == "REQUEST_LIMIT_EXCEEDED":
                svc.guard.pause(LIMIT_PAUSE_S)
                retry.append((_queued_form(item), LIMIT_PAUSE_S))
            elif code in TRANSIENT and item["attempt"] + 1 < MAX_ITEM_ATTEMPTS:
                retry.append(_retry_later(_queued_form(item), code))
            else:
                _write_refused(svc, item, code, message)
    queue.done(batch, retry)
    log.info("salesforce.write_batch", records=len(records), jobs=len(items), retried=len(retry))


def _queued_form(item: dict) -> dict:
    """An item as it goes back on the queue: names, never values."""
    return {k: v for k, v in item.items() if k not in ("changes", "skipped", "tracked", "why")}


def _fresh(svc: BatchServices, plan: dict | None) -> bool:
    read_at = (plan or {}).get("read_at")
    if read_at is None:
        return False
    return time.time() - float(read_at) < svc.reread_after_s


def _plans(svc: BatchServices, items: list[dict]) -> dict[str, dict | None]:
    pipe = svc.store.r.pipeline()
    for item in items:
        pipe.hget(svc.store.provider_key(item["job_id"]), WRITE)
    return {item["job_id"]: json.loads(str(raw)) if raw else None
            for item, raw in zip(items, pipe.execute(), strict=True)}


def _read_again(svc: BatchServices, items: list[dict], plans: dict[str, dict | None]) -> dict[str, dict]:
    """The planned fields as the records have them now: one query per object."""
    by_object: dict[str, list[dict]] = {}
    for item in items:
        if plans[item["job_id"]] is not None:
            by_object.setdefault(item["object"], []).append(item)
    current: dict[str, dict] = {}
    for object_type, object_items in by_object.items():
        fields = {f for item in object_items for f in item["fields"]}
        if any((plans[item["job_id"]] or {}).get("verified_email") for item in object_items):
            fields.add("Email")
        if svc.schema is not None:
            describe = svc.schema.describe(object_type) or {}
            fields &= {f["name"] for f in describe.get("fields", [])}
        ids = sorted({item["record_id"] for item in object_items})
        current.update(svc.salesforce.read_records(object_type, ids, sorted(fields)))
    return current


def still_wanted(plan: dict, record: dict, tracked: dict[str, str]) -> tuple[dict, dict[str, str]]:
    """The planned changes the field map's rules still allow on the record
    as it is now (`tracked`: hashes of what we last wrote), and the ones
    they no longer do, with why. Pure."""
    verification_fields = set(plan.get("verification_fields", []))
    kept, skipped = {}, {}
    for name, value in plan["changes"].items():
        existing = record.get(name)
        if name not in record or rule_allows(plan["rules"].get(name, "always"), existing, value,
                                             tracked.get(name)):
            kept[name] = value  # (a field the org does not have: Salesforce says so, per record)
        elif existing != value:
            skipped[name] = CHANGED_MEANWHILE
    # A verdict describes one address: the one the record will have after
    # this write must still be it (a person may have typed another).
    verified_email = plan.get("verified_email")
    email_after = kept.get("Email", record.get("Email"))
    if verified_email and (is_blank(email_after)
                           or str(email_after).strip().lower() != verified_email.strip().lower()):
        for name in verification_fields & set(kept):
            del kept[name]
            skipped[name] = OTHER_EMAIL
    return kept, skipped


def _whole_batch_failed(svc: BatchServices, queue: BatchQueue, batch: Batch, exc: SalesforceFailure,
                        items: list[dict], held: list[tuple[dict, float]]) -> None:
    if exc.code == "REQUEST_LIMIT_EXCEEDED":
        svc.guard.pause(LIMIT_PAUSE_S)
        queue.done(batch, held + [(_queued_form(item), LIMIT_PAUSE_S) for item in items])
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
    tracked = {f: value_hash(v) for f, v in item["changes"].items() if f in item.get("tracked", ())}
    save_tracked_hashes(store, item["object"], item["record_id"], tracked)
    # Logged before the jobs are done: a flush replayed after a crash here
    # writes again and finds the log already has the job.
    why = item.get("why") or {}
    (svc.change_log or ChangeLog(store.r)).record_write(
        item["job_id"], item["object"], item["record_id"],
        {name: why.get(name, {}) for name in item["changes"]})
    for job_id in jobs_of(item):
        job = store.get(job_id)
        if job is None or not store.finish(job, State.DONE, fields_written=sorted(item["changes"]),
                                           fields_skipped={**job.fields_skipped, **item.get("skipped", {})}):
            continue
        log.info("job.done", job_id=job.id, record_id=job.record_id, fields=sorted(item["changes"]),
                 skipped=sorted(item.get("skipped", {})))


def _write_refused(svc: BatchServices, item: dict, code: str, message: str) -> None:
    for job_id in jobs_of(item):
        if code in RECORD_GONE:
            job = svc.store.finish_by_id(job_id, State.SKIPPED, SkipReason.RECORD_GONE, detail=code)
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
        svc.store.save_provider_data(item["job_id"], "record",
                                     {**(record or {"_missing": True}), READ_AT: time.time()})
    if len(items) > 1:
        # A burst: each of these jobs will queue a write, and a Contact's
        # may queue its Account's job (read with it), whose write joins the
        # burst. Each awaited in its own lane: bulk items that rode along
        # with a new record's read never hold back that record's write.
        for urgent in (True, False):
            expect_jobs(svc, svc.writes, [item["job_id"] for item in items if bool(item.get("urgent")) == urgent],
                        urgent)
    # Jobs first, then the batch: a flusher dying in between leaves the batch
    # to be read again (a job queued twice runs once, under its lock), never
    # a read whose jobs nobody wakes.
    for item in items:
        svc.resume_job(item["job_id"])
    queue.done(batch, held)
    log.info("salesforce.read_batch", records=len(items), objects=sorted(by_object))
