"""The worker's services, built once per process, after the fork:
connections and HTTP sessions are never shared between processes."""
from __future__ import annotations

import os

from celery import current_app

from crm_enrich import counters, keys
from crm_enrich.field_map import load_field_map
from crm_enrich.flow.services import Services
from crm_enrich.jobs.store import JobStore
from crm_enrich.providers.breaker import CircuitBreaker
from crm_enrich.providers.cache import ProviderCache
from crm_enrich.providers.clearout import ClearoutClient, HeaderFedLimiter
from crm_enrich.providers.clodura import CloduraClient
from crm_enrich.providers.quota import Quota
from crm_enrich.providers.rate_limit import SharedRateLimiter
from crm_enrich.queues import enqueue_job
from crm_enrich.salesforce.api_guard import ApiGuard
from crm_enrich.salesforce.batch_queue import BatchQueue
from crm_enrich.salesforce.batches import BatchServices
from crm_enrich.salesforce.gateway import SalesforceGateway
from crm_enrich.salesforce.schema import OrgSchema
from crm_enrich.settings import get_settings

_services: tuple[int, Services] | None = None


def send_task(name: str, countdown: float = 0, args: list | None = None, queue: str | None = None) -> None:
    """A flusher's longer waits (a paused allocation, a lease) come back
    sooner and look again: no delayed message outlives half the broker's
    visibility timeout."""
    countdown = min(countdown, get_settings().max_countdown_s)
    current_app.send_task(name, args=args or [], countdown=countdown or None, queue=queue)


def enqueue(job_id: str, source: str) -> None:
    enqueue_job(current_app, job_id, source)


def services() -> Services:
    global _services
    if _services is None or _services[0] != os.getpid():
        _services = (os.getpid(), build_services())
    return _services[1]


def build_services() -> Services:
    settings = get_settings()
    store = JobStore.from_url(settings.redis_url)
    guard = ApiGuard(store.r, settings.salesforce_bulk_share, settings.salesforce_stop_share)
    limiter = None
    if settings.clodura_limiter == "shared":
        limiter = SharedRateLimiter(store.r, keys.clodura_limiter(settings.clodura_api_key),
                                    settings.clodura_limits)

    def resume(job_id: str) -> None:
        job = store.get(job_id)
        enqueue(job_id, job.source if job else "")

    batches = BatchServices(
        store=store,
        salesforce=SalesforceGateway(
            settings, on_usage=guard.record_usage,
            on_call=lambda: counters.incr(store.r, "salesforce_api_calls")),
        guard=guard,
        reads=BatchQueue(store.r, keys.SALESFORCE_READS, lease_s=settings.batch_lease_s),
        writes=BatchQueue(store.r, keys.SALESFORCE_WRITES, lease_s=settings.batch_lease_s),
        max_delay_s=settings.writeback_max_delay_s,
        schedule=lambda name, countdown: send_task(name, countdown),
        resume_job=resume,
        usage_recheck_s=settings.salesforce_usage_recheck_s,
    )
    clearout = None
    if settings.clearout_api_token:
        clearout = ClearoutClient(
            str(settings.clearout_base_url), settings.clearout_api_token,
            HeaderFedLimiter(store.r, settings.clearout_api_token[-6:]),
            breaker=CircuitBreaker(store.r, "clearout", settings.breaker_failures, settings.breaker_open_s),
            on_answer=lambda endpoint, status: counters.incr(
                store.r, "provider_calls", provider="clearout", endpoint=endpoint, status=status))
    return Services(
        settings=settings,
        clodura=CloduraClient(
            str(settings.clodura_base_url), settings.clodura_api_key, limiter,
            breaker=CircuitBreaker(store.r, "clodura", settings.breaker_failures, settings.breaker_open_s),
            on_answer=lambda endpoint, status: counters.incr(
                store.r, "provider_calls", provider="clodura", endpoint=endpoint, status=status)),
        field_map=load_field_map(settings.field_map),
        batches=batches,
        schema=OrgSchema(store.r, batches.salesforce),
        cache=ProviderCache(store.r, settings.provider_cache_ttl_s),
        quota=Quota(store.r, settings.clodura_daily_credit_budget),
        clearout=clearout,
    )
