"""Task names, queues and the Celery configuration, shared by the worker
and by the web app (which only sends tasks by name and never imports the
worker's code), and the one way to queue a job: `enqueue_job`."""
from __future__ import annotations

from typing import Any, Protocol

from celery import Celery
from kombu import Queue

from crm_enrich.settings import Settings

ENRICH_RECORD = "crm_enrich.enrich_record"
SWEEP_PARKED = "crm_enrich.sweep_parked_jobs"
CHECK_CREDITS = "crm_enrich.check_clodura_credits"
REVERIFY_OLD_EMAILS = "crm_enrich.reverify_old_emails"
FLUSH_READS = "crm_enrich.flush_salesforce_reads"
FLUSH_WRITES = "crm_enrich.flush_salesforce_writes"
HEARTBEAT = "crm_enrich.heartbeat"
SELECT_RERUN_RECORDS = "crm_enrich.select_rerun_records"
# Large selections: a Bulk API 2.0 query job, polled, then read set by set.
POLL_RERUN_QUERY_JOB = "crm_enrich.poll_rerun_query_job"
READ_RERUN_QUERY_PAGE = "crm_enrich.read_rerun_query_page"

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


class TaskSender(Protocol):
    def send_task(self, name: str, args: Any = None, **options: Any) -> Any: ...


def enqueue_job(sender: TaskSender, job_id: str, source: str, **options: Any) -> None:
    """Queue a job's task on the queue its source belongs to (new records'
    work ahead of bulk work). `options` are Celery's publish options."""
    sender.send_task(ENRICH_RECORD, args=[job_id], queue=queue_for(source), **options)


def celery_config(settings: Settings) -> dict[str, Any]:
    annotations = {}
    if settings.clodura_limiter == "per_worker":
        per_minute = min(n * 60 // window for n, window in settings.clodura_limits if window <= 60)
        # About two Clodura calls per record: the naive per-worker setting.
        annotations[ENRICH_RECORD] = {"rate_limit": f"{max(1, per_minute // 2)}/m"}
    return {
        "task_annotations": annotations,
        "broker_url": settings.redis_url,
        # Tasks are short (waits are parked in Redis, never slept), so an
        # unacked task whose worker machine died is redelivered after
        # VISIBILITY_TIMEOUT_S (minutes, not the default hour); no countdown
        # is longer than half of it. Unacked messages are checked for
        # redelivery at least every tenth of it.
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 10)),
            "unacked_restore_throttle": 1,
        },
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
    }


def create_celery(settings: Settings, name: str = "crm_enrich") -> Celery:
    app = Celery(name)
    app.conf.update(celery_config(settings))
    return app
