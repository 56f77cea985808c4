"""Celery tasks: thin wrappers that hand a job id (or a queue) to plain
functions."""
from __future__ import annotations

import os

import structlog
from celery import current_app, shared_task
from celery.signals import task_prerun

from crm_enrich import counters
from crm_enrich.logs import log
from crm_enrich.settings import get_settings
from crm_enrich.worker import async_steps, pipeline, salesforce_batches
from crm_enrich.worker.api_guard import ApiGuard
from crm_enrich.worker.batching import BatchQueue
from crm_enrich.worker import sweeper
from crm_enrich.worker.celery_app import CHECK_CREDITS, ENRICH_RECORD, SWEEP_PARKED, queue_for
from crm_enrich.worker.clearout import ClearoutClient, HeaderFedLimiter
from crm_enrich.worker.clodura import CloduraClient, backoff_s
from crm_enrich.worker.field_map import load_field_map
from crm_enrich.worker.jobs import JobStore
from crm_enrich.worker.org_schema import OrgSchema
from crm_enrich.worker.provider_cache import ProviderCache
from crm_enrich.worker.quota import Quota
from crm_enrich.worker.ratelimit import SharedRateLimiter
from crm_enrich.worker.salesforce import SalesforceGateway

# A message whose worker dies every time it runs it (acks_late +
# reject_on_worker_lost would replay it forever) is failed after this many
# deliveries of the same attempt.
MAX_DELIVERIES = 3

_services: tuple[int, pipeline.Services] | None = None


def _send(name: str, countdown: float = 0, args: list | None = None, queue: str | None = None) -> None:
    current_app.send_task(name, args=args or [], countdown=countdown or None, queue=queue)


def _resume(store: JobStore, job_id: str) -> None:
    job = store.get(job_id)
    _send(ENRICH_RECORD, args=[job_id], queue=queue_for(job.source if job else ""))


def services() -> pipeline.Services:
    """Built once per worker process, after the fork: connections and
    HTTP sessions are never shared between processes."""
    global _services
    if _services is None or _services[0] != os.getpid():
        settings = get_settings()
        store = JobStore.from_url(settings.redis_url)
        guard = ApiGuard(store.r, settings.salesforce_bulk_share, settings.salesforce_stop_share)
        limiter = None
        if settings.clodura_limiter == "shared":
            limiter = SharedRateLimiter(store.r, f"clodura:{settings.clodura_api_key[-6:]}",
                                        settings.clodura_limits)
        batches = salesforce_batches.BatchServices(
            store=store,
            salesforce=SalesforceGateway(
                settings, on_usage=guard.record_usage,
                on_call=lambda: counters.incr(store.r, "salesforce_api_calls")),
            guard=guard,
            reads=BatchQueue(store.r, "salesforce_reads", lease_s=settings.batch_lease_s),
            writes=BatchQueue(store.r, "salesforce_writes", lease_s=settings.batch_lease_s),
            max_delay_s=settings.writeback_max_delay_s,
            schedule=lambda name, countdown: _send(name, countdown),
            resume_job=lambda job_id: _resume(store, job_id),
            usage_recheck_s=settings.salesforce_usage_recheck_s,
        )
        clearout = None
        if settings.clearout_api_token:
            clearout = ClearoutClient(
                str(settings.clearout_base_url), settings.clearout_api_token,
                HeaderFedLimiter(store.r, settings.clearout_api_token[-6:]),
                on_answer=lambda endpoint, status: counters.incr(
                    store.r, "provider_calls", provider="clearout", endpoint=endpoint, status=status))
        _services = (os.getpid(), pipeline.Services(
            settings=settings,
            clodura=CloduraClient(
                str(settings.clodura_base_url), settings.clodura_api_key, limiter,
                on_answer=lambda endpoint, status: counters.incr(
                    store.r, "provider_calls", provider="clodura", endpoint=endpoint, status=status)),
            field_map=load_field_map(settings.field_map),
            batches=batches,
            schema=OrgSchema(store.r, batches.salesforce),
            cache=ProviderCache(store.r, settings.provider_cache_ttl_s),
            quota=Quota(store.r, settings.clodura_daily_credit_budget),
            clearout=clearout,
        ))
    return _services[1]


def over_delivery_cap(store: JobStore, task_id: str, retries: int) -> bool:
    key = f"deliveries:{task_id}:{retries}"
    pipe = store.r.pipeline()
    pipe.incr(key)
    pipe.expire(key, 86_400)
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
        pipeline.give_up(svc, job_id, f"delivered more than {MAX_DELIVERIES} times without finishing")
        return "failed"
    try:
        return pipeline.process_job(svc, job_id, runner_id=self.request.id)
    except pipeline.RetryLater as exc:
        if exc.wait:
            # Same task, new message, same queue; the retry count is untouched.
            queue = (self.request.delivery_info or {}).get("routing_key") or None
            enrich_record.apply_async(args=[job_id], countdown=exc.countdown, queue=queue)
            return "waiting"
        if self.request.retries >= self.max_retries:
            pipeline.give_up(svc, job_id, exc.reason)
            return "failed"
        countdown = exc.countdown if exc.countdown is not None else backoff_s(self.request.retries)
        log.info("job.retry", job_id=job_id, in_s=round(countdown, 1), reason=exc.reason)
        raise self.retry(countdown=countdown)


@shared_task(name=salesforce_batches.FLUSH_READS)
def flush_salesforce_reads() -> int:
    return salesforce_batches.flush_reads(services().batches)


@shared_task(name=salesforce_batches.FLUSH_WRITES)
def flush_salesforce_writes() -> int:
    return salesforce_batches.flush_writes(services().batches)


@shared_task(name=SWEEP_PARKED)
def sweep_parked_jobs() -> int:
    svc = services()
    return (sweeper.resume_parked(svc.store, svc.quota, svc.batches.resume_job)
            + async_steps.sweep_awaiting(svc, svc.batches.resume_job))


@shared_task(name=CHECK_CREDITS)
def check_clodura_credits() -> bool | None:
    svc = services()
    return sweeper.check_credits(svc.quota, svc.clodura)
