"""Turning inbound events into queued jobs: de-duplicate, create, enqueue.

Shared by every way in. `accept_records` makes the jobs; JSON events,
operators' runs and the workers' intake task call it. Outbound Messages,
the high-volume way in, only `forward_records` to that task: one lookup,
one publish and one counter write a message, so that a burst of
Salesforce's 100-notification messages is acknowledged as fast as it
arrives, and the jobs are made by the workers a moment later. Both raise
QueueUnavailable when Redis or the broker cannot take the work, so the
caller answers 503 and the sender retries; nothing is acknowledged before
it is durably queued.
"""
from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

import redis
from kombu.exceptions import OperationalError

from crm_enrich import counters, keys
from crm_enrich.jobs.store import JobStore, NewJob
from crm_enrich.logs import log
from crm_enrich.salesforce.outbound_message import SentValue

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
    # The record's values as an authenticated Outbound Message sent them
    # (every declared field present, None: null), or as a CREATE change
    # event did; None when the job must read the record (undeclared object,
    # JSON events, other changes). Kept only in the job's provider data
    # (24 h at most, dropped when the job ends).
    values: Mapping[str, SentValue] | None = None
    received_at: float | None = None   # when the record held them (the values' age); None: now

    def to_task_args(self) -> list:
        """The record as the intake task's message carries it (JSON)."""
        return [self.dedupe_key, self.object_type, self.record_id, self.source, self.fields_sent, self.force]

    @classmethod
    def from_task_args(cls, args: list) -> InboundRecord:
        dedupe_key, object_type, record_id, source, fields_sent, force = args
        return cls(dedupe_key, object_type, record_id, source, tuple(fields_sent), bool(force))


@dataclass
class IntakeResult:
    accepted: list[str] = field(default_factory=list)     # job ids queued now
    duplicates: list[str] = field(default_factory=list)   # job ids already queued before


class QueueUnavailable(Exception):
    pass


# How a caller queues jobs: (job ids, their source), one publish for all.
Enqueue = Callable[[list[str], str], None]
# How the web hands records to the workers' intake task: one publish for
# all, with the key of their declared values (None: none declared).
Forward = Callable[[list[InboundRecord], str | None], None]


@dataclass
class ForwardResult:
    forwarded: int = 0     # records handed to the intake task now
    duplicates: int = 0    # records whose event was taken in before


def forward_records(store: JobStore, forward: Forward, records: Iterable[InboundRecord]) -> ForwardResult:
    """Hand a message's records to the workers' intake task, which makes
    and queues their jobs (`accept_records`), in three round trips: one
    MGET drops the events already taken in (a redelivery), one publish
    carries the rest, and one pipeline counts them and, like every
    acknowledged write, waits for durability; the publish is before it in
    Redis's log, so it is as durable. A redelivery that arrives before the
    first delivery's task has run is forwarded again and dropped by that
    task's own de-duplication, which claims each event's key as it makes
    its job: never a second job. Raises QueueUnavailable before anything is
    acknowledged."""
    records = list(records)
    result = ForwardResult()
    try:
        lookup = store.r.pipeline(transaction=False)
        lookup.mget([store.dedupe_key(rec.dedupe_key) for rec in records])
        # Declared values (emails among them) never travel in the task's
        # message, which a stopped worker could leave in Redis for days: they
        # wait under a key of their own, 24 h at most.
        values_key = _keep_values(lookup, records)
        taken_in = lookup.execute()[0] if records else []
        fresh = [rec for rec, job_id in zip(records, taken_in, strict=True) if not job_id]
        if fresh:
            forward(fresh, values_key)
        pipe = store.r.pipeline(transaction=False)
        counts = Counter(("records_forwarded", rec.source) for rec in fresh)
        counts.update(("duplicates_dropped", rec.source)
                      for rec, job_id in zip(records, taken_in, strict=True) if job_id)
        for (name, source), n in counts.items():
            counters.incr(pipe, name, n, source=source)
        store.execute_acknowledged(pipe)
    except (redis.RedisError, OperationalError, OSError) as exc:
        log.warning("intake.unavailable", error=type(exc).__name__, records=len(records))
        raise QueueUnavailable(str(exc)) from exc
    result.forwarded, result.duplicates = len(fresh), len(records) - len(fresh)
    return result


def ignore_records(store: JobStore, source: str, reason: str, count: int) -> None:
    """Count records an event named that another way in takes in. Only a
    count: with Redis away it is lost, and nothing else is."""
    try:
        counters.incr(store.r, "records_ignored", count, source=source, reason=reason)
    except (redis.RedisError, OSError) as exc:
        log.warning("intake.count_lost", error=type(exc).__name__)


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


def _keep_values(pipe: redis.client.Pipeline, records: list[InboundRecord]) -> str | None:
    values = {rec.dedupe_key: rec.values for rec in records if rec.values is not None}
    if not values:
        return None
    key = keys.intake_values(uuid.uuid4().hex)
    pipe.set(key, json.dumps({"received_at": time.time(), "values": values}), ex=keys.INTAKE_VALUES_TTL_S)
    return key


def with_kept_values(store: JobStore, records: list[InboundRecord], values_key: str | None) -> list[InboundRecord]:
    """The intake task's records with the values the web app kept for them;
    without (none declared, or kept longer than 24 h) their jobs read."""
    raw = store.r.get(values_key) if values_key else None
    if not raw:
        return records
    kept = json.loads(raw)
    return [replace(rec, values=kept["values"].get(rec.dedupe_key), received_at=kept["received_at"])
            for rec in records]


def forget_kept_values(store: JobStore, values_key: str | None) -> None:
    """Once their jobs hold them (or need them no more)."""
    if values_key:
        store.r.delete(values_key)


def _save_sent_records(store: JobStore, sent: list[tuple[InboundRecord, str]]) -> None:
    """Each new job's record as its message sent it, in the slot a read
    fills, before the job is queued (so its first run finds it and reads
    nothing): one round trip for the message."""
    if not sent:
        return
    now = time.time()
    pipe = store.r.pipeline(transaction=False)
    for rec, job_id in sent:
        store.save_provider_data(job_id, RECORD, sent_record(rec.values or {}, rec.received_at or now), pipe=pipe)
    pipe.execute()
