"""GET /metrics in Prometheus format. Every value is read from Redis at
scrape time, so the answer is the same whichever gunicorn process serves it
and covers every worker."""
from __future__ import annotations

import math
import time

import redis
from flask import Blueprint, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from crm_enrich import counters, keys
from crm_enrich.providers.quota import Quota
from crm_enrich.queues import BULK_QUEUE, URGENT_QUEUE
from crm_enrich.salesforce.api_guard import ApiGuard
from crm_enrich.salesforce.batch_queue import BatchQueue
from web.context import context

bp = Blueprint("metrics", __name__)


class RedisStateCollector:
    def __init__(self, store, daily_credit_budget: float | None = None, cdc_topics: list[str] | None = None):
        self.store = store
        self.daily_credit_budget = daily_credit_budget
        self.cdc_topics = cdc_topics or []   # SALESFORCE_INGEST=cdc: the subscriber's topics

    def collect(self):
        jobs = GaugeMetricFamily("crm_enrich_jobs", "Jobs by state (kept 7 days)", labels=["state"])
        for state, count in self.store.counts_by_state().items():
            jobs.add_metric([state], count)
        yield jobs

        guard = ApiGuard(self.store.r)
        usage = guard.usage()
        used = GaugeMetricFamily("crm_enrich_salesforce_api_used",
                                 "Salesforce daily API requests used (last Sforce-Limit-Info)")
        total = GaugeMetricFamily("crm_enrich_salesforce_api_allocation", "Salesforce daily API allocation")
        if usage:
            used.add_metric([], usage[0])
            total.add_metric([], usage[1])
        yield used
        yield total
        yield GaugeMetricFamily("crm_enrich_salesforce_paused_seconds",
                                "Seconds until Salesforce calls resume after REQUEST_LIMIT_EXCEEDED",
                                value=guard.paused_for())

        depth = GaugeMetricFamily("crm_enrich_batch_queue_depth", "Items waiting for a Salesforce batch",
                                  labels=["queue"])
        for name in ("salesforce_reads", "salesforce_writes"):
            depth.add_metric([name], BatchQueue(self.store.r, name).size())
        yield depth
        celery_depth = GaugeMetricFamily("crm_enrich_celery_queue_depth", "Tasks waiting in a Celery queue",
                                         labels=["queue"])
        for queue in (URGENT_QUEUE, BULK_QUEUE):
            celery_depth.add_metric([queue], self.store.r.llen(queue))
        yield celery_depth
        yield from spending_families(self.store.r, self.daily_credit_budget)
        yield heartbeat_family(self.store.r)
        if self.cdc_topics:
            yield from subscriber_families(self.store.r, self.cdc_topics)
        yield from counter_families(counters.read(self.store.r))


def spending_families(r: redis.Redis, daily_credit_budget: float | None):
    """Whether Clodura spending is paused, and by what; today's spend against
    the budget; the last balance /credits reported."""
    quota = Quota(r, daily_credit_budget)
    paused = GaugeMetricFamily("crm_enrich_spending_paused",
                               "1 while credit-spending steps wait, by reason: quota (409, until the daily reset), "
                               "credits (402, until /credits shows a balance), budget (until the next UTC day)",
                               labels=["reason"])
    paused.add_metric(["quota"], float(quota.quota_resets_in() > 0))
    paused.add_metric(["credits"], float(quota.paused_reason() is not None))
    paused.add_metric(["budget"], float(quota.budget_paused()))
    yield paused
    yield GaugeMetricFamily("crm_enrich_clodura_credits_spent_today", "Clodura credits spent this UTC day",
                            value=quota.spent_today())
    budget = GaugeMetricFamily("crm_enrich_clodura_daily_credit_budget",
                               "CLODURA_DAILY_CREDIT_BUDGET (no sample when no budget is set)")
    if daily_credit_budget is not None:
        budget.add_metric([], daily_credit_budget)
    yield budget
    remaining = GaugeMetricFamily("crm_enrich_clodura_credits_remaining",
                                  "Clodura credit balance at the last /credits check (while paused for credits)")
    balance = r.get(keys.credits_remaining("clodura"))
    if balance is not None:
        remaining.add_metric([], float(balance))
    yield remaining


def heartbeat_age(beat: str | bytes | None, now: float) -> float:
    """Seconds since the heartbeat `<unix time> <host> <source>` was written;
    +Inf when there is none (the key expires after WORKER_HEARTBEAT_TTL_S)
    or it cannot be read."""
    try:
        return max(0.0, now - float(beat.split()[0])) if beat else math.inf
    except ValueError:
        return math.inf


def heartbeat_family(r: redis.Redis) -> GaugeMetricFamily:
    return GaugeMetricFamily("crm_enrich_worker_heartbeat_age_seconds",
                             "Seconds since the last worker heartbeat (+Inf: none within "
                             f"{keys.WORKER_HEARTBEAT_TTL_S} s)", value=heartbeat_age(r.get(keys.WORKER_HEARTBEAT),
                                                                                     time.time()))


def subscriber_families(r: redis.Redis, topics: list[str]):
    """The CDC subscriber's sign of life and, per topic, how long ago it
    last stored a replay id (its events queued; a quiet topic's keepalive)."""
    now = time.time()
    yield GaugeMetricFamily("crm_enrich_cdc_subscriber_heartbeat_age_seconds",
                            "Seconds since the CDC subscriber's last heartbeat (+Inf: none within "
                            f"{keys.CDC_HEARTBEAT_TTL_S} s)", value=heartbeat_age(r.get(keys.CDC_HEARTBEAT), now))
    replayed = GaugeMetricFamily("crm_enrich_cdc_last_replay_age_seconds",
                                 "Seconds since the topic's replay id was last stored (+Inf: never)",
                                 labels=["topic"])
    for topic in topics:
        at = r.hget(keys.cdc_replay(topic), "at")
        replayed.add_metric([topic], max(0.0, now - float(at)) if at else math.inf)
    yield replayed


HELP = {
    "cdc_events_delivered": "Change events the Pub/Sub API delivered to us, by topic: each counts against "
                            "the org's daily event delivery allocation",
    "records_received": "Records accepted from Salesforce or an operator, by source",
    "records_forwarded": "Outbound Message records acknowledged and handed to the workers' intake, by source",
    "duplicates_dropped": "Redelivered events recognised and dropped",
    "records_ignored": "Records an event named that we did not take in, by source and reason "
                       "(ingest_is_cdc: an Outbound Message while change events make the jobs)",
    "jobs_finished": "Jobs that reached a final state",
    "jobs_skipped": "Jobs that ended skipped, by reason (a SkipReason code)",
    "provider_calls": "Provider answers by endpoint and HTTP status (429, 409, 402 included)",
    "provider_credits": "Provider credits spent",
    "salesforce_api_calls": "Salesforce API calls made",
    "job_to_writeback_seconds": "Time from a record's event to its write-back",
    "callback_delay_seconds": "Time from an asynchronous Clodura request to its callback, by step",
    "callbacks_applied": "Clodura callbacks stored on their job, by step",
    "reverify_triggers": "Scheduled re-verification triggers, by what they did",
    "reverify_selected": "Records selected for re-verification, by object",
    "refresh_triggers": "Scheduled refresh triggers, by what they did",
    "refresh_selected": "Records selected for a scheduled refresh, by object",
    "async_results": "Asynchronous results by step and how they ended (callback, poll, gave_up)",
}


def counter_families(samples):
    """Counters and histograms from the shared Redis hash."""
    by_name: dict[str, list] = {}
    for name, labels, value in samples:
        base = name.rsplit("_", 1)[0] if name.endswith(("_bucket", "_sum", "_count")) else name
        by_name.setdefault(base, []).append((name, labels, value))
    family: HistogramMetricFamily | CounterMetricFamily
    for base, rows in sorted(by_name.items()):
        if any(name.endswith("_bucket") for name, _, _ in rows):
            label_names = sorted({k for _, lab, _ in rows for k in lab if k != "le"})
            family = HistogramMetricFamily(f"crm_enrich_{base}", HELP.get(base, base), labels=label_names)
            series = sorted({tuple(str(lab.get(k, "")) for k in label_names) for _, lab, _ in rows})
            for values in series:
                mine = [(n, lab, v) for n, lab, v in rows
                        if tuple(str(lab.get(k, "")) for k in label_names) == values]
                buckets = sorted(((lab["le"], v) for n, lab, v in mine if n.endswith("_bucket")),
                                 key=lambda b: float(b[0]))
                total = next((v for n, _, v in mine if n.endswith("_sum")), 0.0)
                family.add_metric(list(values), [(str(le), v) for le, v in buckets], sum_value=total)
        else:
            label_names = sorted({k for _, lab, _ in rows for k in lab})
            family = CounterMetricFamily(f"crm_enrich_{base}", HELP.get(base, base), labels=label_names)
            for _, labels, value in rows:
                family.add_metric([str(labels.get(k, "")) for k in label_names], value)
        yield family


@bp.get("/metrics")
def metrics():
    registry = CollectorRegistry(auto_describe=False)
    ctx = context()
    cdc_topics = ctx.settings.cdc_topics if ctx.settings.salesforce_ingest == "cdc" else None
    registry.register(RedisStateCollector(ctx.store, ctx.settings.clodura_daily_credit_budget, cdc_topics))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
