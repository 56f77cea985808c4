"""Batches that wait only when waiting pays, on a stack whose longest wait
(WRITEBACK_MAX_DELAY_S) is 30 s and which runs no beat (whose safety flush
would hide a batch left waiting): whatever finishes well before 30 s was
sent because nothing was worth waiting for."""
from __future__ import annotations

import time
import uuid

import pytest
from celery import Celery

from crm_enrich.dev.devstack import Stack, wait_for
from crm_enrich.jobs.store import JobStore
from crm_enrich.queues import URGENT_QUEUE
from crm_enrich.salesforce.batch_queue import BatchQueue
from crm_enrich.salesforce.batches import BatchServices, queue_write
from crm_enrich.sandbox.control import SandboxControl
from crm_enrich.sandbox.dataset import build_dataset

from .conftest import final_job

LONGEST_WAIT_S = 30
COMPOSITE = "/composite/sobjects"


@pytest.fixture(scope="module")
def slow_stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("batch-timing"), worker_concurrency=2,
                  extra_env={"WRITEBACK_MAX_DELAY_S": str(LONGEST_WAIT_S)})
    try:
        stack.start_web()
        stack.start_worker()
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def ctl(slow_stack):
    return SandboxControl(slow_stack.sandbox.info)


@pytest.fixture
def jobs(slow_stack):
    return JobStore(slow_stack.redis_client())


def last_seq(control) -> int:
    return max([e["seq"] for e in control.log("salesforce")] or [0])


def calls(control, since: int, part: str) -> list[dict]:
    return [e for e in control.log("salesforce", since=since) if part in e["path"]]


def known_people(n: int):
    ds = build_dataset()
    people = [p for p in ds.people if p.known and p.email_verdict == "Deliverable"]
    return [(p, ds.company(p.organisation_id)) for p in people[40:40 + n]]


def test_a_lone_record_is_read_and_written_at_once(ctl, jobs):
    ((person, _),) = known_people(1)
    mark = last_seq(ctl)
    started = time.monotonic()
    (rid,) = ctl.create_records("Contact", [{"FirstName": person.first_name, "LastName": person.last_name,
                                             "Email": person.email}])
    job = final_job(jobs, "Contact", rid, timeout=LONGEST_WAIT_S - 10)
    assert job.state == "done", job.last_error
    assert time.monotonic() - started < LONGEST_WAIT_S - 10  # neither batch waited for company
    assert len(calls(ctl, mark, "/query")) == 1 and len(calls(ctl, mark, COMPOSITE)) == 1


def test_a_contact_and_its_account_share_one_write_call(ctl, jobs):
    person, company = known_people(2)[1]
    (account_id,) = ctl.create_records("Account", [{"Name": company.name}], fire_outbound=False)
    mark = last_seq(ctl)
    (rid,) = ctl.create_records("Contact", [{"FirstName": person.first_name, "LastName": person.last_name,
                                             "Email": person.email, "AccountId": account_id}])
    assert final_job(jobs, "Contact", rid, timeout=LONGEST_WAIT_S - 5).state == "done"
    assert final_job(jobs, "Account", account_id, timeout=LONGEST_WAIT_S - 5).state == "done"
    assert ctl.record("Contact", rid)["writes"] and ctl.record("Account", account_id)["writes"]
    assert len(calls(ctl, mark, COMPOSITE)) == 1   # both records, one sObject Collections call


def test_a_burst_is_batched_and_sent_once_arrivals_pause(slow_stack, ctl, jobs):
    """250 writes queued back to back, with no cork: the first goes alone
    (nothing told the queue more were coming), the rest wait for batch
    mates and go when arrivals pause, long before the 30 s limit."""
    sender = Celery("tests", broker=slow_stack.redis.url)
    svc = BatchServices(store=jobs, salesforce=None, guard=None, reads=None,
                        writes=BatchQueue(jobs.r, "salesforce_writes"), max_delay_s=LONGEST_WAIT_S,
                        resume_job=None,
                        schedule=lambda name, countdown: sender.send_task(name, countdown=countdown or None,
                                                                          queue=URGENT_QUEUE))
    ids = ctl.create_records("Contact", [{"LastName": f"Burst{i}"} for i in range(250)], fire_outbound=False)
    mark = last_seq(ctl)
    started = time.monotonic()
    job_ids = []
    for i, rid in enumerate(ids):
        job, _ = jobs.create_unless_seen(f"test:{uuid.uuid4().hex}", "Contact", rid, "json_event", {})
        jobs.transition(job, "writing")
        queue_write(svc, job.id, "Contact", rid, {"Title": f"Burst {i}"}, {"Title": "always"}, urgent=True)
        job_ids.append(job.id)
    wait_for(lambda: all(jobs.get(j).final for j in job_ids), LONGEST_WAIT_S - 10, "the burst to be written")
    assert time.monotonic() - started < LONGEST_WAIT_S - 10
    assert {jobs.get(j).state for j in job_ids} == {"done"}
    assert len(calls(ctl, mark, COMPOSITE)) <= 3   # 1 alone, then 200 and the rest: never one per record
