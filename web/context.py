"""What every blueprint works with, built once per web process by
create_app: the settings, the job store, and the two ways to hand work to
the workers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celery import Celery
from flask import current_app

from crm_enrich.flow.intake import InboundRecord
from crm_enrich.jobs.store import JobStore
from crm_enrich.queues import ACCEPT_RECORDS, PUBLISH_RETRY, URGENT_QUEUE, enqueue_job, enqueue_jobs
from crm_enrich.settings import Settings

EXTENSION = "crm_enrich"


@dataclass(frozen=True)
class WebContext:
    settings: Settings
    store: JobStore
    celery: Celery

    def enqueue(self, job_id: str, source: str) -> None:
        enqueue_job(self.celery, job_id, source, retry=True, retry_policy=PUBLISH_RETRY)

    def enqueue_jobs(self, job_ids: list[str], source: str) -> None:
        enqueue_jobs(self.celery, job_ids, source, retry=True, retry_policy=PUBLISH_RETRY)

    def forward_records(self, records: list[InboundRecord], values_key: str | None) -> None:
        """One intake task for a message's records. Its arguments are shown
        as a count: Celery would otherwise repr a hundred records into the
        message's headers on every publish."""
        self.celery.send_task(ACCEPT_RECORDS, args=[[rec.to_task_args() for rec in records], values_key],
                              queue=URGENT_QUEUE, argsrepr=f"[<{len(records)} records>, {values_key!r}]",
                              retry=True, retry_policy=PUBLISH_RETRY)

    def send_task(self, name: str, args: list[Any]) -> None:
        self.celery.send_task(name, args=args, retry=True, retry_policy=PUBLISH_RETRY)


def context() -> WebContext:
    ctx: WebContext = current_app.extensions[EXTENSION]
    return ctx
