"""Reading a re-run's selection from Salesforce, page by page.

The first task counts the selection (one SELECT COUNT() call). Up to
SALESFORCE_BULK_QUERY_THRESHOLD records are read with REST query paging;
more go through a Bulk API 2.0 query job: polled by re-scheduled tasks (no
worker waits), then read set by set with its locator. Either way each page
is one short task (worker/operation_tasks.py) that queues a job per record
and hands on the next page. Bulk locators, unlike REST query cursors (gone
after 15 minutes idle), outlive a long wait for the API allocation. A
capped run (a scheduled re-verification: the oldest N) is counted by
whoever starts it and always read with REST paging: Bulk API 2.0 queries
should not sort or limit (docs/salesforce.md#bulk-api-2-query).
"""
from __future__ import annotations

import time

from crm_enrich.flow.intake import Enqueue
from crm_enrich.jobs.store import JobStore
from crm_enrich.logs import log
from crm_enrich.salesforce.gateway import SalesforceGateway
from crm_enrich.salesforce.soql import selection_soql

from . import runs

QUERY_JOB_POLL_MAX_S = 30
QUERY_JOB_GIVE_UP_S = 2 * 3600
# Seconds to wait before reading the next page while the org's allocation
# only allows urgent work.
ALLOCATION_WAIT_S = 60


def cap(run: dict) -> tuple[str | None, int | None]:
    """(order_by, limit) of a capped run, else (None, None)."""
    return (run.get("order_by"), int(run["limit"])) if run.get("limit") else (None, None)


def query_ids_page(gateway: SalesforceGateway, object_type: str, where: str | None,
                   next_url: str | None, order_by: str | None = None,
                   limit: int | None = None) -> tuple[list[str], int, str | None]:
    """One page of `SELECT Id FROM <object> WHERE <where>` (ordered and
    limited if asked): (ids, totalSize, nextRecordsUrl or None)."""
    if next_url:
        result = gateway.query_page(next_url=next_url)
    else:
        result = gateway.query_page(selection_soql("Id", object_type, where, order_by, limit))
    ids = [rec["Id"] for rec in result.get("records", [])]
    return ids, int(result.get("totalSize", len(ids))), (None if result.get("done", True)
                                                        else result.get("nextRecordsUrl"))


def fail_run(store: JobStore, run_id: str, error: str, code: str) -> int:
    store.r.hset(runs.run_key(run_id), mapping={"status": "failed", "error": error[:500]})
    log.warning("run.selection_failed", run_id=run_id, error=code)
    return 0


def queue_page(store: JobStore, enqueue: Enqueue, run_id: str, run: dict,
               object_type: str, ids: list[str], total: int | None, more: bool, via: str) -> None:
    queued = runs.queue_run_records(store, enqueue, run_id, run.get("kind", "rerun"), object_type, ids)
    log.info("run.page_queued", run_id=run_id, page=len(ids), queued=queued, total=total, via=via)
    if not more:
        store.r.hset(runs.run_key(run_id), "status", "queued")


def start_query_job(store: JobStore, gateway: SalesforceGateway, run_id: str, run: dict,
                    object_type: str, where: str | None, total: int) -> str:
    """The run's query job, created once: a repeated task finds it in the run."""
    job_id = run.get("query_job")
    if not job_id:
        job_id = gateway.start_query_job(selection_soql("Id", object_type, where))
        store.r.hset(runs.run_key(run_id), mapping={"query_job": job_id, "query_job_at": time.time()})
    log.info("run.query_job_started", run_id=run_id, query_job=job_id, total=total)
    return job_id


def query_job_next(store: JobStore, run_id: str, run: dict, job_id: str, info: dict) -> str:
    """What to do after one look at the query job: "read", "poll" again,
    or "failed" (the run is marked failed)."""
    state = info.get("state")
    if state == "JobComplete":
        return "read"
    if state in ("Failed", "Aborted"):
        fail_run(store, run_id, f"query job {job_id} {state}: {info.get('errorMessage', '')}",
                 f"QUERY_JOB_{str(state).upper()}")
        return "failed"
    if time.time() - float(run.get("query_job_at") or 0) > QUERY_JOB_GIVE_UP_S:
        fail_run(store, run_id, f"query job {job_id} still {state} after {QUERY_JOB_GIVE_UP_S} s",
                 "QUERY_JOB_TIMEOUT")
        return "failed"
    return "poll"
