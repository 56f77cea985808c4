"""Turning inbound events into queued jobs: de-duplicate, create, enqueue.

Shared by every way in (Outbound Messages, JSON events). Raises
QueueUnavailable when Redis or the broker cannot take the work, so the
caller answers 503 and the sender retries; nothing is acknowledged before
it is durably queued.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import redis
from kombu.exceptions import OperationalError

from crm_enrich import counters
from crm_enrich.jobs.store import JobStore
from crm_enrich.logs import log


@dataclass(frozen=True)
class InboundRecord:
    dedupe_key: str
    object_type: str
    record_id: str
    source: str
    # The names of the fields the event carried, for the job's bookkeeping.
    # Their values are never kept or used: the job reads the record.
    fields_sent: tuple[str, ...] = ()
    force: bool = False  # an operator's re-run that must not use cached answers


@dataclass
class IntakeResult:
    accepted: list[str] = field(default_factory=list)     # job ids queued now
    duplicates: list[str] = field(default_factory=list)   # job ids already queued before


class QueueUnavailable(Exception):
    pass


def accept_records(store: JobStore, enqueue: Callable[[str, str], None],
                   records: Iterable[InboundRecord]) -> IntakeResult:
    result = IntakeResult()
    try:
        for rec in records:
            job, duplicate = store.create_unless_seen(
                rec.dedupe_key, rec.object_type, rec.record_id, rec.source,
                {"fields_sent": sorted(rec.fields_sent)} if rec.fields_sent else {}, force=rec.force)
            if duplicate:
                counters.incr(store.r, "duplicates_dropped", source=rec.source)
                result.duplicates.append(job.id)
                log.info("event.duplicate", job_id=job.id, record_id=rec.record_id,
                         dedupe_key=rec.dedupe_key, source=rec.source)
                continue
            enqueue(job.id, rec.source)
            store.mark_enqueued(job.id)
            counters.incr(store.r, "records_received", source=rec.source, object=rec.object_type)
            result.accepted.append(job.id)
            log.info("job.queued", job_id=job.id, record_id=rec.record_id,
                     object=rec.object_type, source=rec.source)
    except (redis.RedisError, OperationalError, OSError) as exc:
        log.warning("intake.unavailable", error=type(exc).__name__, queued=len(result.accepted))
        raise QueueUnavailable(str(exc)) from exc
    return result
