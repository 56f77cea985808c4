"""Large re-run selections are read through a Bulk API 2.0 query job. A stack
of its own, whose threshold is 10 records and whose result sets hold 7, so
a few dozen records show the whole path: count, query job, polls, sets
read with the locator, one job per record."""
from __future__ import annotations

import math
import uuid

import pytest
import requests
from celery import Celery

from crm_enrich import counters, queues
from crm_enrich.dev.devstack import Stack, wait_for
from crm_enrich.jobs.store import JobStore
from crm_enrich.operations import runs
from crm_enrich.queues import URGENT_QUEUE
from crm_enrich.sandbox.control import SandboxControl
from crm_enrich.sandbox.dataset import build_dataset

THRESHOLD = 10
PAGE = 7
JOBS_PATH = "/services/data/v59.0/jobs/query"


@pytest.fixture(scope="module")
def bstack(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("bulkq"), worker_concurrency=2, extra_env={
            "SALESFORCE_BULK_QUERY_THRESHOLD": str(THRESHOLD),
            "SALESFORCE_BULK_QUERY_PAGE_SIZE": str(PAGE)}) as stack:
        yield stack


@pytest.fixture
def bcontrol(bstack):
    control = SandboxControl(bstack.sandbox.info)
    yield control
    control.clear_faults("salesforce")


@pytest.fixture
def bstore(bstack):
    return JobStore(bstack.redis_client())


_people = iter([p for p in build_dataset().people if p.known and p.email_verdict == "Deliverable"][300:])


def create_contacts(control, count: int, last_name: str) -> list[str]:
    return control.create_records("Contact", [
        {"FirstName": p.first_name, "LastName": last_name, "Email": p.email}
        for p in (next(_people) for _ in range(count))], fire_outbound=False)


def api(stack, method: str, path: str, **kw) -> requests.Response:
    return requests.request(method, stack.web_url + path, timeout=30,
                            headers={"Authorization": f"Bearer {stack.admin_token}"}, **kw)


def run_status(stack, run_id: str, statuses: tuple[str, ...], timeout: float = 120) -> dict:
    def reached():
        run = api(stack, "GET", f"/admin/runs/{run_id}").json()
        return run if run["status"] in statuses else None

    return wait_for(reached, timeout, f"run {run_id} to be {' or '.join(statuses)}", interval=0.3)


def seq(control) -> int:
    return max([e["seq"] for e in control.log("salesforce")] or [0])


def bulk_calls(control, since: int) -> list[dict]:
    return [e for e in control.log("salesforce", since=since) if e["path"].startswith(JOBS_PATH)]


def jobs_by_record(store: JobStore, run_id: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for job_id in store.r.smembers(runs.run_jobs_key(run_id)):
        out.setdefault(store.get(job_id).record_id, []).append(job_id)
    return out


def duplicates_dropped(store: JobStore) -> float:
    return float(store.r.hget(counters.KEY, "duplicates_dropped|source=rerun") or 0)


def test_a_selection_above_the_threshold_goes_through_a_query_job(bstack, bcontrol, bstore):
    marker = f"Bulk{uuid.uuid4().hex[:8]}"
    ids = create_contacts(bcontrol, 24, marker)
    other = create_contacts(bcontrol, 1, f"Other{uuid.uuid4().hex[:8]}")
    where = f"LastName = '{marker}'"

    mark = seq(bcontrol)
    dry = api(bstack, "POST", "/admin/rerun", json={"object": "Contact", "where": where, "dryRun": True})
    assert dry.status_code == 200 and dry.json()["records"] == 24
    assert bulk_calls(bcontrol, mark) == []  # a dry run counts and reads what it prices with REST

    mark = seq(bcontrol)
    resp = api(bstack, "POST", "/admin/rerun", json={"object": "Contact", "where": where})
    assert resp.status_code == 202
    run_id = resp.json()["runId"]
    run = run_status(bstack, run_id, ("finished", "failed"))
    assert run["status"] == "finished", run
    assert run["total"] == 24 and run["queued"] == 24 and run["jobs"] == {"done": 24}

    # One query job, polled until complete, then read set by set.
    calls = bulk_calls(bcontrol, mark)
    created = [e for e in calls if e["method"] == "POST" and e["path"] == JOBS_PATH]
    assert len(created) == 1 and created[0]["status"] == 200
    job_id = bstore.r.hget(runs.run_key(run_id), "query_job")
    assert job_id and job_id.startswith("750")
    polls = [e for e in calls if e["path"] == f"{JOBS_PATH}/{job_id}"]
    results = [e for e in calls if e["path"] == f"{JOBS_PATH}/{job_id}/results"]
    assert polls and all(e["status"] == 200 for e in polls + results)
    assert [e["records"] for e in results] == [PAGE, PAGE, PAGE, 24 - 3 * PAGE]
    assert len(results) == math.ceil(24 / PAGE)

    # Every selected record has exactly one job in the run; nothing else does.
    by_record = jobs_by_record(bstore, run_id)
    assert sorted(by_record) == sorted(ids) and all(len(j) == 1 for j in by_record.values())
    assert bstore.r.get(f"record:Contact:{other[0]}:last_job") is None
    for rid in ids:
        assert bstore.get(by_record[rid][0]).source == "rerun"

    # A set read again (a redelivered task) queues nothing twice. The task
    # goes on to the next sets as the first one did, so wait for all of them:
    # a set still being read would show in the next test's call log.
    before = duplicates_dropped(bstore)
    Celery(broker=bstack.redis.url).send_task(queues.READ_RERUN_QUERY_PAGE, queue=URGENT_QUEUE,
                                              args=[run_id, "Contact", job_id, None])
    wait_for(lambda: duplicates_dropped(bstore) >= before + 24, 30, "every set to be read again")
    assert len(bstore.r.smembers(runs.run_jobs_key(run_id))) == 24
    assert all(len(j) == 1 for j in jobs_by_record(bstore, run_id).values())


def test_a_selection_at_or_below_the_threshold_keeps_rest_paging(bstack, bcontrol, bstore):
    marker = f"Small{uuid.uuid4().hex[:8]}"
    ids = create_contacts(bcontrol, THRESHOLD, marker)
    mark = seq(bcontrol)
    resp = api(bstack, "POST", "/admin/rerun", json={"object": "Contact", "where": f"LastName = '{marker}'"})
    run = run_status(bstack, resp.json()["runId"], ("finished", "failed"))
    assert run["status"] == "finished" and run["total"] == THRESHOLD and run["jobs"] == {"done": THRESHOLD}
    assert bulk_calls(bcontrol, mark) == []
    assert sorted(jobs_by_record(bstore, resp.json()["runId"])) == sorted(ids)


def test_a_failed_query_job_fails_the_run_and_queues_nothing(bstack, bcontrol, bstore):
    marker = f"Failing{uuid.uuid4().hex[:8]}"
    create_contacts(bcontrol, THRESHOLD + 1, marker)
    # The job's first status check says Failed, as Salesforce does when it
    # cannot process a query.
    bcontrol.add_fault("salesforce", path=f"{JOBS_PATH}/", method="GET", status=200, times=1,
                       body={"id": "7505g00000FaiLEDAAA", "state": "Failed",
                             "errorMessage": "InvalidBatch : Failed to process query: too many things"})
    resp = api(bstack, "POST", "/admin/rerun", json={"object": "Contact", "where": f"LastName = '{marker}'"})
    run = run_status(bstack, resp.json()["runId"], ("failed", "queued", "finished"))
    assert run["status"] == "failed" and "Failed to process query" in run["error"]
    assert run["queued"] == 0 and run["jobs"] == {}
