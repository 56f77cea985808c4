"""The record's tasks: thin wrappers that hand a job id (or a queue) to the
plain functions of crm_enrich.flow and map what they raise onto Celery."""
from __future__ import annotations

import structlog
from celery import shared_task
from celery.signals import task_prerun

from crm_enrich import keys
from crm_enrich.backoff import backoff_s
from crm_enrich.flow import awaiting, parked, run
from crm_enrich.jobs.store import JobStore
from crm_enrich.logs import log
from crm_enrich.queues import (
    CHECK_CREDITS,
    ENRICH_RECORD,
    ENRICH_RECORDS,
    FLUSH_READS,
    FLUSH_WRITES,
    SWEEP_PARKED,
    URGENT_QUEUE,
    queue_for,
)
from crm_enrich.salesforce import batches

from .services import services

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


@shared_task(bind=True, name=ENRICH_RECORD, max_retries=8)
def enrich_record(self, job_id: str) -> str:
    structlog.contextvars.bind_contextvars(job_id=job_id)
    svc = services()
    if over_delivery_cap(svc.store, self.request.id, self.request.retries):
        run.give_up(svc, job_id, f"delivered more than {MAX_DELIVERIES} times without finishing")
        return "failed"
    try:
        return run.process_job(svc, job_id, runner_id=self.request.id)
    except run.RetryLater as exc:
        if exc.wait:
            # Same task, new message, same queue; the retry count is untouched.
            queue = (self.request.delivery_info or {}).get("routing_key") or None
            enrich_record.apply_async(args=[job_id], countdown=exc.countdown, queue=queue)
            return "waiting"
        if self.request.retries >= self.max_retries:
            run.give_up(svc, job_id, exc.reason)
            return "failed"
        countdown = exc.countdown if exc.countdown is not None else backoff_s(self.request.retries)
        log.info("job.retry", job_id=job_id, in_s=round(countdown, 1), reason=exc.reason)
        raise self.retry(countdown=countdown) from None


@shared_task(name=ENRICH_RECORDS)
def enrich_records(job_ids: list[str], source: str) -> int:
    """Split an inbound message's fan-out into one task per job, on the
    jobs' own queue. Acked only after every task is published, so a worker
    that dies half way replays the whole split (a job's task running twice
    is harmless: its lock and its state make the second run a no-op or a
    continuation)."""
    queue = queue_for(source)
    if len(job_ids) > 1:
        # Their reads come together.
        batches.burst_coming(services().batches, services().batches.reads, urgent=queue == URGENT_QUEUE)
    for job_id in job_ids:
        enrich_record.apply_async(args=[job_id], queue=queue)
    return len(job_ids)


@shared_task(name=FLUSH_READS)
def flush_salesforce_reads() -> int:
    return batches.flush_reads(services().batches)


@shared_task(name=FLUSH_WRITES)
def flush_salesforce_writes() -> int:
    return batches.flush_writes(services().batches)


@shared_task(name=SWEEP_PARKED)
def sweep_parked_jobs() -> int:
    svc = services()
    return (parked.resume_parked(svc.store, svc.quota, svc.batches.resume_job)
            + awaiting.sweep_awaiting(svc, svc.batches.resume_job))


@shared_task(name=CHECK_CREDITS)
def check_clodura_credits() -> bool | None:
    svc = services()
    return parked.check_credits(svc.quota, svc.clodura)
