"""Task names, queues and the Celery configuration, shared by the worker
and by the web app (which only sends tasks by name and never imports the
worker's code), and the one way to queue a job: `enqueue_job`."""
from __future__ import annotations

import sys
import time
from typing import Any, Protocol

import redis
from celery import Celery
from kombu import Queue

from crm_enrich.redis_connection import broker_sentinel_options, broker_url, redis_client
from crm_enrich.settings import Settings

ENRICH_RECORD = "crm_enrich.enrich_record"
# The fan-out: one message carries the job ids of a whole inbound message
# (one publish instead of one per record); the worker splits it into
# ENRICH_RECORD tasks on the same queue.
ENRICH_RECORDS = "crm_enrich.enrich_records"
FAN_OUT_MAX = 500   # job ids per fan-out message
# The workers' intake: one message carries an Outbound Message's records
# (not yet jobs); the task makes their jobs and fans them out.
ACCEPT_RECORDS = "crm_enrich.accept_records"
SWEEP_PARKED = "crm_enrich.sweep_parked_jobs"
SWEEP_CLEAROUT_LISTS = "crm_enrich.sweep_clearout_lists"
CHECK_CREDITS = "crm_enrich.check_clodura_credits"
REVERIFY_OLD_EMAILS = "crm_enrich.reverify_old_emails"
REFRESH_OLD_RECORDS = "crm_enrich.refresh_old_records"
FLUSH_READS = "crm_enrich.flush_salesforce_reads"
FLUSH_WRITES = "crm_enrich.flush_salesforce_writes"
HEARTBEAT = "crm_enrich.heartbeat"
SELECT_RERUN_RECORDS = "crm_enrich.select_rerun_records"
# Large selections: a Bulk API 2.0 query job, polled, then read set by set.
POLL_RERUN_QUERY_JOB = "crm_enrich.poll_rerun_query_job"
READ_RERUN_QUERY_PAGE = "crm_enrich.read_rerun_query_page"
RECONCILE = "crm_enrich.reconcile_unenriched"

# New records' work and bulk work (re-runs, backfills) wait in separate
# queues that every worker consumes in turn, so a backfill of 50,000
# records never starves a record created meanwhile.
URGENT_QUEUE = "enrich"
BULK_QUEUE = "bulk"
EVENT_SOURCES = frozenset({"outbound_message", "json_event", "cdc"})
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


def enqueue_jobs(sender: TaskSender, job_ids: list[str], source: str, **options: Any) -> None:
    """Queue many jobs of one source with one publish per FAN_OUT_MAX
    (a single job goes as its own task: nothing to split)."""
    if len(job_ids) == 1:
        enqueue_job(sender, job_ids[0], source, **options)
        return
    for start in range(0, len(job_ids), FAN_OUT_MAX):
        sender.send_task(ENRICH_RECORDS, args=[job_ids[start:start + FAN_OUT_MAX], source],
                         queue=queue_for(source), **options)


# Publishing from a process that someone is waiting on (Salesforce's
# request, with its 60 s timeout; the CDC stream) must fail fast on a broker
# that is down: the web app answers 503 and the subscriber reopens its
# stream from the stored replay id, rather than hanging.
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}

# No task runs longer (Celery kills it): locks that guard a call live longer.
TASK_TIME_LIMIT_S = 240
TASK_SOFT_TIME_LIMIT_S = 200

# Delete a lock only if it is still ours (it may have expired and been
# taken by someone else meanwhile).
RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def celery_config(settings: Settings) -> dict[str, Any]:
    annotations = {}
    if settings.clodura_limiter == "per_worker":
        per_minute = min(n * 60 // window for n, window in settings.clodura_limits if window <= 60)
        # About two Clodura calls per record: the naive per-worker setting.
        annotations[ENRICH_RECORD] = {"rate_limit": f"{max(1, per_minute // 2)}/m"}
    return {
        "task_annotations": annotations,
        "broker_url": broker_url(settings),
        # Tasks are short (waits are parked in Redis, never slept), so an
        # unacked task whose worker machine died is redelivered after
        # VISIBILITY_TIMEOUT_S (minutes, not the default hour); no countdown
        # is longer than half of it. Unacked messages are checked for
        # redelivery at least every tenth of it. Every worker takes turns at
        # that check under a lock in Redis; a worker killed while it held the
        # lock (kombu keeps it 300 s) would hold up the redelivery of a dead
        # machine's tasks: the lock lasts a tenth of the timeout (a check
        # takes milliseconds; two at once restore nothing twice, kombu
        # restores each message in a transaction).
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 10)),
            "unacked_mutex_expire": max(2, min(60, settings.visibility_timeout_s // 10)),
            "unacked_restore_throttle": 1,
            "health_check_interval": 10,
            "socket_keepalive": True,
            "retry_on_timeout": True,
            # With Sentinel: kombu's `sentinel://` transport asks the
            # Sentinels for the master on every (re)connection.
            **broker_sentinel_options(settings),
            # A worker takes new records' tasks first (the queues in
            # task_queues' order), bulk work only when none wait: live work
            # overtakes a backfill instead of sharing the workers with it.
            "queue_order_strategy": "priority",
        },
        "broker_connection_retry_on_startup": True,
        # Redis restarts: keep reconnecting for ever; cancel the tasks that
        # were running when the connection went (their messages are
        # redelivered, and the job lock and JobMemory make a replay safe)
        # rather than let them ack into a connection that is gone; find a
        # dead connection by health checks instead of waiting on it.
        "broker_connection_retry": True,
        "broker_connection_max_retries": None,
        "broker_channel_error_retry": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # A publish (a retry, a resumed job) outlives a Redis restart of
        # up to about half a minute.
        "task_publish_retry": True,
        "task_publish_retry_policy": {"max_retries": 12, "interval_start": 0.5, "interval_step": 1,
                                      "interval_max": 4},
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
        "task_time_limit": TASK_TIME_LIMIT_S,
        "task_soft_time_limit": TASK_SOFT_TIME_LIMIT_S,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
    }


def create_celery(settings: Settings, name: str = "crm_enrich") -> Celery:
    app = Celery(name)
    app.conf.update(celery_config(settings))
    return app


def redis_durability_problems(client: redis.Redis) -> list[str]:
    """What makes this Redis unsafe as our broker and store: a restart
    without AOF loses queued tasks and jobs; eviction drops them silently."""
    try:
        config = {**client.config_get("appendonly"), **client.config_get("maxmemory-policy")}
    except redis.ResponseError as exc:
        return [f"cannot read its configuration ({exc}); check appendonly and maxmemory-policy yourself"]
    problems = []
    if config.get("appendonly") != "yes":
        problems.append("it does not persist (appendonly is not yes): a restart loses every queued task "
                        "and job; set appendonly yes")
    if config.get("maxmemory-policy") != "noeviction":
        problems.append(f"it may evict keys when memory is full (maxmemory-policy "
                        f"{config.get('maxmemory-policy')}): set maxmemory-policy noeviction")
    return problems


def exit_on_unsafe_redis(settings: Settings, wait_s: float = 30.0) -> None:
    """For process start-up (web, worker, beat): refuse a Redis that does not
    persist or may evict, unless REDIS_RISK_ACCEPTED says so. Redis may still
    be starting: it is given `wait_s` to answer."""
    if settings.redis_risk_accepted:
        return
    client = redis_client(settings)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            problems = redis_durability_problems(client)
            break
        except (redis.ConnectionError, redis.TimeoutError) as exc:  # MasterNotFoundError is one
            if time.monotonic() > deadline:
                problems = [f"it does not answer ({exc})"]
                break
            time.sleep(1)
    if problems:
        print("crm-enrich: Redis (REDIS_URL or the Sentinels' master) is not safe for our queues and jobs:\n  "
              + "\n  ".join(problems)
              + "\nFix it, or set REDIS_RISK_ACCEPTED=true to run anyway.", file=sys.stderr, flush=True)
        raise SystemExit(3)
