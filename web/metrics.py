"""GET /metrics in Prometheus format. Every value is read from Redis at
scrape time, so the answer is the same whichever gunicorn process serves it
and covers every worker."""
from __future__ import annotations

from flask import Blueprint, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from crm_enrich import counters
from crm_enrich.queues import BULK_QUEUE, URGENT_QUEUE
from crm_enrich.salesforce.api_guard import ApiGuard
from crm_enrich.salesforce.batch_queue import BatchQueue
from web.context import context

bp = Blueprint("metrics", __name__)


class RedisStateCollector:
    def __init__(self, store):
        self.store = store

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
        yield from counter_families(counters.read(self.store.r))


HELP = {
    "records_received": "Records accepted from Salesforce or an operator, by source",
    "duplicates_dropped": "Redelivered events recognised and dropped",
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
    "async_results": "Asynchronous results by step and how they ended (callback, poll, gave_up)",
}


def counter_families(samples):
    """Counters and histograms from the shared Redis hash."""
    by_name: dict[str, list] = {}
    for name, labels, value in samples:
        base = name.rsplit("_", 1)[0] if name.endswith(("_bucket", "_sum", "_count")) else name
        by_name.setdefault(base, []).append((name, labels, value))
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
    registry.register(RedisStateCollector(context().store))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
