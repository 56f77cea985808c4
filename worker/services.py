"""The worker's services, built once per process, after the fork:
connections and HTTP sessions are never shared between processes."""
from __future__ import annotations

import os

from celery import current_app

from crm_enrich import counters, keys
from crm_enrich.field_map import load_field_map
from crm_enrich.flow.services import Services
from crm_enrich.jobs.changes import ChangeLog
from crm_enrich.jobs.store import JobStore
from crm_enrich.providers.breaker import CircuitBreaker
from crm_enrich.providers.cache import ProviderCache
from crm_enrich.providers.clearout import ClearoutClient, HeaderFedLimiter
from crm_enrich.providers.clodura import CloduraClient
from crm_enrich.providers.company_autocomplete import CompanyAutocomplete, autocomplete_url
from crm_enrich.providers.quota import Quota
from crm_enrich.providers.rate_limit import SharedRateLimiter
from crm_enrich.queues import enqueue_job, enqueue_jobs
from crm_enrich.salesforce.api_guard import ApiGuard
from crm_enrich.salesforce.batch_queue import BatchQueue
from crm_enrich.salesforce.batches import BatchServices
from crm_enrich.salesforce.gateway import SalesforceGateway
from crm_enrich.salesforce.schema import OrgSchema, check_field_map_at_start
from crm_enrich.settings import Settings, get_settings

_services: tuple[int, Services] | None = None


def send_task(name: str, countdown: float = 0, args: list | None = None, queue: str | None = None) -> None:
    """A flusher's longer waits (a paused allocation, a lease) come back
    sooner and look again: no delayed message outlives half the broker's
    visibility timeout."""
    countdown = min(countdown, get_settings().max_countdown_s)
    current_app.send_task(name, args=args or [], countdown=countdown or None, queue=queue)


def enqueue(job_id: str, source: str) -> None:
    enqueue_job(current_app, job_id, source)


def enqueue_many(job_ids: list[str], source: str) -> None:
    enqueue_jobs(current_app, job_ids, source)


def services() -> Services:
    global _services
    if _services is None or _services[0] != os.getpid():
        _services = (os.getpid(), build_services())
    return _services[1]


def change_log(store: JobStore, settings: Settings) -> ChangeLog:
    return ChangeLog(store.r, settings.change_log_days, settings.change_log_max_per_day,
                     settings.change_log_per_record)


def build_services() -> Services:
    settings = get_settings()
    store = JobStore.from_settings(settings)
    guard = ApiGuard(store.r, settings.salesforce_bulk_share, settings.salesforce_stop_share)
    limiter = None
    if settings.clodura_limiter == "shared":
        limiter = SharedRateLimiter(store.r, keys.clodura_limiter(settings.clodura_api_key),
                                    settings.clodura_limits)

    def resume(job_id: str) -> None:
        job = store.get(job_id)
        enqueue(job_id, job.source if job else "")

    salesforce = SalesforceGateway(settings, on_usage=guard.record_usage,
                                   on_call=lambda: counters.incr(store.r, "salesforce_api_calls"))
    schema = OrgSchema(store.r, salesforce)
    batches = BatchServices(
        store=store,
        salesforce=salesforce,
        schema=schema,
        guard=guard,
        reads=BatchQueue(store.r, keys.SALESFORCE_READS, lease_s=settings.batch_lease_s, one_object_a_batch=True),
        writes=BatchQueue(store.r, keys.SALESFORCE_WRITES, lease_s=settings.batch_lease_s),
        max_delay_s=settings.writeback_max_delay_s,
        reread_after_s=settings.writeback_reread_after_s,
        quiet_s=settings.batch_quiet_s,
        burst_max_s=settings.batch_burst_max_s,
        schedule=lambda name, countdown: send_task(name, countdown),
        resume_job=resume,
        usage_recheck_s=settings.salesforce_usage_recheck_s,
        change_log=change_log(store, settings),
    )
    clearout = None
    if settings.clearout_api_token:
        clearout = ClearoutClient(
            str(settings.clearout_base_url), settings.clearout_api_token,
            HeaderFedLimiter(store.r, settings.clearout_api_token[-6:]),
            breaker=CircuitBreaker(store.r, "clearout", settings.breaker_failures, settings.breaker_open_s),
            on_answer=lambda endpoint, status: counters.incr(
                store.r, "provider_calls", provider="clearout", endpoint=endpoint, status=status))
    schema = OrgSchema(store.r, batches.salesforce)
    return Services(
        settings=settings,
        clodura=CloduraClient(
            str(settings.clodura_base_url), settings.clodura_api_key, limiter,
            breaker=CircuitBreaker(store.r, "clodura", settings.breaker_failures, settings.breaker_open_s),
            on_answer=lambda endpoint, status: counters.incr(
                store.r, "provider_calls", provider="clodura", endpoint=endpoint, status=status)),
        # Without the mappings the org cannot take (worker/app.py warns of them).
        field_map=check_field_map_at_start(load_field_map(settings.field_map), schema).usable,
        batches=batches,
        schema=schema,
        cache=ProviderCache(store.r, settings.provider_cache_ttl_s),
        quota=Quota(store.r, settings.clodura_daily_credit_budget),
        clearout=clearout,
        company_autocomplete=company_autocomplete(store, settings),
    )


def company_autocomplete(store: JobStore, settings: Settings) -> CompanyAutocomplete | None:
    """Clearout's public autocomplete beside CLEAROUT_BASE_URL; our token
    goes with it when we have one (its window is then our account's)."""
    if not settings.company_domain_lookup:
        return None
    token = settings.clearout_api_token
    return CompanyAutocomplete(
        autocomplete_url(str(settings.clearout_base_url)), token,
        HeaderFedLimiter(store.r, (token or "public")[-6:]),
        breaker=CircuitBreaker(store.r, "clearout_autocomplete", settings.breaker_failures, settings.breaker_open_s),
        on_answer=lambda endpoint, status: counters.incr(
            store.r, "provider_calls", provider="clearout", endpoint=endpoint, status=status))
