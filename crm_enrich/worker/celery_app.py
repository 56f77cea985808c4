"""Celery configuration, shared by the worker and by the web app (which only
sends tasks by name and never imports the worker's code)."""
from __future__ import annotations

from celery import Celery
from kombu import Queue

from crm_enrich.settings import Settings

ENRICH_RECORD = "crm_enrich.enrich_record"
SWEEP_PARKED = "crm_enrich.sweep_parked_jobs"
CHECK_CREDITS = "crm_enrich.check_clodura_credits"
REVERIFY_OLD_EMAILS = "crm_enrich.reverify_old_emails"

# New records' work and bulk work (re-runs, backfills) wait in separate
# queues that every worker consumes in turn, so a backfill of 50,000
# records never starves a record created meanwhile.
URGENT_QUEUE = "enrich"
BULK_QUEUE = "bulk"
EVENT_SOURCES = frozenset({"outbound_message", "json_event"})
# A scheduled re-verification of an old email: verify only, no enrichment.
REVERIFY_SOURCE = "reverify"


def queue_for(source: str) -> str:
    return URGENT_QUEUE if source in EVENT_SOURCES else BULK_QUEUE


# Tasks are short (waits are parked in Redis, never slept), so an unacked
# task whose worker machine died can be redelivered after minutes, not the
# default hour. Must stay above the longest task run plus any countdown.
VISIBILITY_TIMEOUT_S = 300


def celery_config(settings: Settings) -> dict:
    annotations = {}
    if settings.clodura_limiter == "per_worker":
        per_minute = min(n * 60 // window for n, window in settings.clodura_limits if window <= 60)
        # About two Clodura calls per record: the naive per-worker setting.
        annotations[ENRICH_RECORD] = {"rate_limit": f"{max(1, per_minute // 2)}/m"}
    return {
        "task_annotations": annotations,
        "broker_url": settings.redis_url,
        "broker_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT_S},
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_backend": None,
        "task_ignore_result": True,
        # At-least-once: a task is acked only after it ran, and a task whose
        # worker process died is handed back to the queue.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": URGENT_QUEUE,
        "task_queues": [Queue(URGENT_QUEUE), Queue(BULK_QUEUE)],
        "task_time_limit": 240,
        "task_soft_time_limit": 200,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        # Safety net: flushes are scheduled when work is queued; beat makes
        # sure a lost schedule cannot leave a batch waiting.
        "beat_schedule": {
            "flush-salesforce-reads": {"task": "crm_enrich.flush_salesforce_reads", "schedule": 10.0},
            "flush-salesforce-writes": {"task": "crm_enrich.flush_salesforce_writes", "schedule": 10.0},
            "resume-parked-jobs": {"task": SWEEP_PARKED, "schedule": settings.sweep_interval_s},
            "check-clodura-credits": {"task": CHECK_CREDITS, "schedule": settings.credits_check_interval_s},
            **reverify_schedule(settings),
        },
    }


def reverify_schedule(settings: Settings) -> dict:
    """The periodic re-verification, when REVERIFY_AFTER_DAYS turns it on.
    Bulk work: it waits behind new records' work, and a trigger still
    waiting when the next is due expires instead of piling up."""
    if settings.reverify_after_days is None:
        return {}
    return {"reverify-old-emails": {
        "task": REVERIFY_OLD_EMAILS, "schedule": settings.reverify_interval_s,
        "options": {"queue": BULK_QUEUE, "expires": settings.reverify_interval_s}}}


def create_celery(settings: Settings, name: str = "crm_enrich") -> Celery:
    app = Celery(name)
    app.conf.update(celery_config(settings))
    return app
