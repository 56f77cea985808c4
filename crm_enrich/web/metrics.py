"""GET /metrics in Prometheus format. Every value is read from Redis at
scrape time, so the answer is the same whichever gunicorn process serves it
and covers every worker."""
from __future__ import annotations

from flask import Blueprint, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from crm_enrich.web import services
from crm_enrich.worker.api_guard import ApiGuard
from crm_enrich.worker.batching import BatchQueue

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
        yield GaugeMetricFamily("crm_enrich_celery_queue_depth", "Tasks waiting in the Celery queue",
                                value=self.store.r.llen("enrich"))


@bp.get("/metrics")
def metrics():
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisStateCollector(services()["store"]))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
