"""Celery tasks: thin wrappers that hand a job id to the pipeline."""
from __future__ import annotations

import os

from celery import shared_task

from crm_enrich.logs import log
from crm_enrich.settings import get_settings
from crm_enrich.worker import pipeline
from crm_enrich.worker.celery_app import ENRICH_RECORD
from crm_enrich.worker.clodura import CloduraClient
from crm_enrich.worker.field_map import load_field_map
from crm_enrich.worker.jobs import JobStore
from crm_enrich.worker.ratelimit import SharedRateLimiter
from crm_enrich.worker.salesforce import SalesforceGateway

# A message whose worker dies every time it runs it (acks_late +
# reject_on_worker_lost would replay it forever) is failed after this many
# deliveries of the same attempt.
MAX_DELIVERIES = 3

_services: tuple[int, pipeline.Services] | None = None


def services() -> pipeline.Services:
    """Built once per worker process, after the fork: connections and
    HTTP sessions are never shared between processes."""
    global _services
    if _services is None or _services[0] != os.getpid():
        settings = get_settings()
        store = JobStore.from_url(settings.redis_url, provider_ttl_s=settings.provider_cache_ttl_s)
        limiter = SharedRateLimiter(store.r, f"clodura:{settings.clodura_api_key[-6:]}",
                                    settings.clodura_limits)
        _services = (os.getpid(), pipeline.Services(
            settings=settings,
            store=store,
            clodura=CloduraClient(str(settings.clodura_base_url), settings.clodura_api_key, limiter),
            salesforce=SalesforceGateway(settings),
            field_map=load_field_map(settings.field_map),
        ))
    return _services[1]


def over_delivery_cap(svc: pipeline.Services, task_id: str, retries: int) -> bool:
    key = f"deliveries:{task_id}:{retries}"
    pipe = svc.store.r.pipeline()
    pipe.incr(key)
    pipe.expire(key, 86_400)
    count, _ = pipe.execute()
    return count > MAX_DELIVERIES


@shared_task(bind=True, name=ENRICH_RECORD, max_retries=8)
def enrich_record(self, job_id: str) -> str:
    svc = services()
    if over_delivery_cap(svc, self.request.id, self.request.retries):
        pipeline.give_up(svc, job_id, f"delivered more than {MAX_DELIVERIES} times without finishing")
        return "failed"
    try:
        return pipeline.process_job(svc, job_id)
    except pipeline.RetryLater as exc:
        if self.request.retries >= self.max_retries:
            pipeline.give_up(svc, job_id, exc.reason)
            return "failed"
        log.info("job.retry", job_id=job_id, in_s=round(exc.countdown, 1), reason=exc.reason)
        raise self.retry(countdown=exc.countdown)
