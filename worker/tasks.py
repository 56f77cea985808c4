"""The record's tasks: thin wrappers that hand a job id (or a queue) to the
plain functions of crm_enrich.flow and map what they raise onto Celery."""
from __future__ import annotations

import structlog
from celery import shared_task
from celery.signals import task_prerun
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from crm_enrich import keys
from crm_enrich.backoff import backoff_s
from crm_enrich.flow import awaiting, clearout_lists, intake, parked, run
from crm_enrich.jobs.store import JobStore
from crm_enrich.logs import log
from crm_enrich.queues import (
    ACCEPT_RECORDS,
    CHECK_CREDITS,
    ENRICH_RECORD,
    ENRICH_RECORDS,
    FLUSH_READS,
    FLUSH_WRITES,
    SWEEP_CLEAROUT_LISTS,
    SWEEP_PARKED,
    URGENT_QUEUE,
    queue_for,
)
from crm_enrich.salesforce import batches

from .services import enqueue_many, services

# A message whose worker dies every time it runs it (acks_late +
# reject_on_worker_lost would replay it forever) is failed after this many
# deliveries of the same attempt.
MAX_DELIVERIES = 3


def over_delivery_cap(store: JobStore, task_id: str, retries: int) -> bool:
    key = keys.deliveries(task_id, retries)
    pipe = store.r.pipeline()
    pipe.incr(key)
    pipe.expire(key, keys.DELIVERIES_TTL_S)
    count, _ = pipe.execute()
    return count > MAX_DELIVERIES


@task_prerun.connect
def _log_context(task_id=None, **_) -> None:
    """Every log line of a task carries its task id, and nothing of the
    task the same process ran before."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=task_id)


@shared_task(bind=True, name=ENRICH_RECORD, max_retries=None)
def enrich_record(self, job_id: str) -> str:
    structlog.contextvars.bind_contextvars(job_id=job_id)
    svc = services()
    try:
        if over_delivery_cap(svc.store, self.request.id, self.request.retries):
            run.give_up(svc, job_id, f"delivered more than {MAX_DELIVERIES} times without finishing")
            return "failed"
        try:
            return run.process_job(svc, job_id, runner_id=self.request.id)
        except run.RetryLater:
            raise
        except Exception as exc:  # noqa: BLE001  the catch-all: never stop silently
            log.exception("job.unexpected_error", job_id=job_id, error=type(exc).__name__)
            run.retry_unexpected(svc, job_id, exc)
            return "stopped"
    except run.RetryLater as exc:
        return _again(self, svc, job_id, exc)
    except (RedisError, OperationalError) as exc:
        # Redis went away mid-task (or while recording the error): retry with
        # backoff; if even that cannot be published, the message stays
        # unacked and the broker hands it back once Redis is back.
        log.warning("job.redis_unavailable", job_id=job_id, error=str(exc))
        raise self.retry(countdown=backoff_s(self.request.retries, cap=svc.settings.max_countdown_s)) from None


def _again(task, svc, job_id: str, exc: run.RetryLater) -> str:
    """Run the job's task again after a short wait (never longer than the
    broker can hold a delayed message: longer waits were parked)."""
    if exc.wait:
        # Same task, new message, same queue; the retry count is untouched.
        queue = (task.request.delivery_info or {}).get("routing_key") or None
        countdown = min(exc.countdown or 0, svc.settings.max_countdown_s)
        enrich_record.apply_async(args=[job_id], countdown=countdown, queue=queue)
        return "waiting"
    cap = svc.settings.max_countdown_s
    countdown = exc.countdown if exc.countdown is not None else backoff_s(task.request.retries, cap=cap)
    countdown = min(countdown, cap)
    log.info("job.retry", job_id=job_id, in_s=round(countdown, 1), reason=exc.reason)
    raise task.retry(countdown=countdown) from None


@shared_task(name=ENRICH_RECORDS)
def enrich_records(job_ids: list[str], source: str) -> int:
    """Split an inbound message's fan-out into one task per job, on the
    jobs' own queue. Acked only after every task is published, so a worker
    that dies half way replays the whole split (a job's task running twice
    is harmless: its lock and its state make the second run a no-op or a
    continuation)."""
    split_jobs(job_ids, source)
    return len(job_ids)


def split_jobs(job_ids: list[str], source: str) -> None:
    queue = queue_for(source)
    if len(job_ids) > 1:
        # Their reads come together: the read batch waits for all of them.
        batches.expect_jobs(services().batches, services().batches.reads, job_ids, urgent=queue == URGENT_QUEUE)
    for job_id in job_ids:
        enrich_record.apply_async(args=[job_id], queue=queue)


@shared_task(bind=True, name=ACCEPT_RECORDS, max_retries=None)
def accept_records(self, records: list[list], values_key: str | None = None) -> int:
    """An Outbound Message's records, acknowledged by the web app: make and
    queue their jobs (de-duplicated, so a redelivered message or a replay of
    this task makes none twice), each job's task published from here, with
    the declared values the web app kept for them. While Redis cannot take
    them, retry with backoff; the message stays unacked until then."""
    svc = services()
    try:
        inbound = intake.with_kept_values(svc.store, [intake.InboundRecord.from_task_args(r) for r in records],
                                          values_key)
        result = intake.accept_records(svc.store, split_jobs, inbound)
        intake.forget_kept_values(svc.store, values_key)
    except (intake.QueueUnavailable, RedisError):
        raise self.retry(countdown=backoff_s(self.request.retries, cap=svc.settings.max_countdown_s)) from None
    return len(result.accepted)


@shared_task(name=FLUSH_READS)
def flush_salesforce_reads() -> int:
    return batches.flush_reads(services().batches)


@shared_task(name=FLUSH_WRITES)
def flush_salesforce_writes() -> int:
    return batches.flush_writes(services().batches)


@shared_task(name=SWEEP_PARKED)
def sweep_parked_jobs() -> int:
    svc = services()
    moved = (parked.resume_parked(svc.store, svc.quota, svc.batches.resume_job)
             + awaiting.sweep_awaiting(svc, svc.batches.resume_job)
             + parked.revive_stuck(svc.store, svc.settings, svc.batches.resume_job,
                                   lambda: parked.queues_idle(svc.store, svc.batches.reads)))
    svc.store.trim_state_index()  # entries older than the job hashes they point to
    return moved


@shared_task(name=SWEEP_CLEAROUT_LISTS)
def sweep_clearout_lists() -> int:
    """Follow large runs' Clearout bulk lists (crm_enrich/flow/clearout_lists.py)."""
    svc = services()
    if svc.clearout is None:
        return 0
    return clearout_lists.sweep_lists(svc, lambda job_ids, source: enqueue_many(job_ids, source))


@shared_task(name=CHECK_CREDITS)
def check_clodura_credits() -> bool | None:
    svc = services()
    return parked.check_credits(svc.quota, svc.clodura)
