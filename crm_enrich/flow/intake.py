"""Turning inbound events into queued jobs: de-duplicate, create, enqueue.

Shared by every way in (Outbound Messages, JSON events). Raises
QueueUnavailable when Redis or the broker cannot take the work, so the
caller answers 503 and the sender retries; nothing is acknowledged before
it is durably queued.
"""
from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import redis
from kombu.exceptions import OperationalError

from crm_enrich import counters
from crm_enrich.jobs.store import JobStore, NewJob
from crm_enrich.logs import log

from .record import RECORD, sent_record


@dataclass(frozen=True)
class InboundRecord:
    dedupe_key: str
    object_type: str
    record_id: str
    source: str
    # The names of the fields the event carried, for the job's bookkeeping.
    fields_sent: tuple[str, ...] = ()
    force: bool = False  # an operator's re-run that must not use cached answers
    # The record's values as an authenticated Outbound Message sent them,
    # every declared field present (None: null); None when the job must read
    # the record (undeclared object, JSON events). Kept only in the job's
    # provider data (24 h at most, dropped when the job ends).
    values: dict[str, str | None] | None = None


@dataclass
class IntakeResult:
    accepted: list[str] = field(default_factory=list)     # job ids queued now
    duplicates: list[str] = field(default_factory=list)   # job ids already queued before


class QueueUnavailable(Exception):
    pass


# How a caller queues jobs: (job ids, their source), one publish for all.
Enqueue = Callable[[list[str], str], None]


def accept_records(store: JobStore, enqueue: Enqueue, records: Iterable[InboundRecord]) -> IntakeResult:
    """De-duplicate, create and queue a message's records in a fixed number
    of round trips (store.create_many_unless_seen; one publish per source;
    one pipeline marking the jobs queued, with the counters). Any failure
    raises QueueUnavailable before the caller acknowledges anything; jobs
    created but not marked queued are queued by the sender's retry."""
    records = list(records)
    result = IntakeResult()
    try:
        seen = store.create_many_unless_seen([
            NewJob(rec.dedupe_key, rec.object_type, rec.record_id, rec.source,
                   {"fields_sent": sorted(rec.fields_sent)} if rec.fields_sent else {}, force=rec.force)
            for rec in records])
        by_source: dict[str, list[str]] = {}
        for rec, job in zip(records, seen, strict=True):
            if job.duplicate:
                result.duplicates.append(job.job_id)
            else:
                by_source.setdefault(rec.source, []).append(job.job_id)
        _save_sent_records(store, [(rec, job.job_id) for rec, job in zip(records, seen, strict=True)
                                   if not job.duplicate and rec.values is not None])
        for source, job_ids in by_source.items():
            enqueue(job_ids, source)
        pipe = store.r.pipeline(transaction=False)
        for job_ids in by_source.values():
            store.mark_many_enqueued(pipe, job_ids)
        counts = Counter(("duplicates_dropped", rec.source, None) if job.duplicate
                         else ("records_received", rec.source, rec.object_type)
                         for rec, job in zip(records, seen, strict=True))
        for (name, source, object_type), n in counts.items():
            labels = {"source": source} | ({"object": object_type} if object_type else {})
            counters.incr(pipe, name, n, **labels)
        # With Sentinel, on a replica too (WAIT); else fsynced (WAITAOF).
        store.execute_acknowledged(pipe)
    except (redis.RedisError, OperationalError, OSError) as exc:
        log.warning("intake.unavailable", error=type(exc).__name__, records=len(records))
        raise QueueUnavailable(str(exc)) from exc
    result.accepted = [job_id for job_ids in by_source.values() for job_id in job_ids]
    # One line per message, not per record: at thousands of records a second
    # the log lines were a good part of the cost.
    if result.accepted:
        log.info("jobs.queued", jobs=result.accepted, sources=sorted(by_source), count=len(result.accepted))
    if result.duplicates:
        log.info("events.duplicate", jobs=result.duplicates, count=len(result.duplicates))
    return result


def _save_sent_records(store: JobStore, sent: list[tuple[InboundRecord, str]]) -> None:
    """Each new job's record as its message sent it, in the slot a read
    fills, before the job is queued (so its first run finds it and reads
    nothing): one round trip for the message."""
    if not sent:
        return
    received_at = time.time()
    pipe = store.r.pipeline(transaction=False)
    for rec, job_id in sent:
        store.save_provider_data(job_id, RECORD, sent_record(rec.values or {}, received_at), pipe=pipe)
    pipe.execute()
