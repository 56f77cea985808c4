"""Outside the happy path: a job that a task left without a word is revived
or failed visibly, and a provider outage parks jobs behind a shared
circuit breaker instead of hammering the provider, then they all finish.

A stack of its own: a sweeper every second, jobs counted stuck after a few
seconds, and a breaker that opens after 3 failures for 5 s."""
from __future__ import annotations

import time
import uuid

import pytest

from crm_enrich.dev.devstack import Stack, wait_for
from crm_enrich.jobs.state import State
from crm_enrich.jobs.store import JobStore
from crm_enrich.sandbox.control import SandboxControl
from crm_enrich.sandbox.dataset import build_dataset
from tests.integration.conftest import final_job

STUCK_AFTER_S, MAX_REVIVALS = 6, 2
BREAKER_FAILURES, BREAKER_OPEN_S, CONCURRENCY = 3, 5, 2
OUTAGE_S = 25


@pytest.fixture(scope="module")
def sstack(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("stuck"), worker_concurrency=CONCURRENCY, extra_env={
            "VISIBILITY_TIMEOUT_S": "8", "SWEEP_INTERVAL_S": "1",
            "STUCK_AFTER_S": str(STUCK_AFTER_S), "STUCK_MAX_REVIVALS": str(MAX_REVIVALS),
            "BREAKER_FAILURES": str(BREAKER_FAILURES), "BREAKER_OPEN_S": str(BREAKER_OPEN_S)}) as stack:
        yield stack


@pytest.fixture
def scontrol(sstack):
    control = SandboxControl(sstack.sandbox.info)
    yield control
    control.clear_faults("clodura")


@pytest.fixture
def sstore(sstack):
    return JobStore(sstack.redis_client())


_people = iter([p for p in build_dataset().people if p.known and p.email_verdict == "Deliverable"][600:])


def contact_fields() -> dict:
    p = next(_people)
    return {"FirstName": p.first_name, "LastName": p.last_name, "Email": p.email}


def last_seq(control) -> int:
    return max([e["seq"] for e in control.log("clodura")] or [0])


def orphan_job(control, store: JobStore, state: State) -> tuple[str, str]:
    """A job in a working state with no task anywhere: what a task leaves
    behind when it stops without a word (its message acknowledged)."""
    (rid,) = control.create_records("Contact", [contact_fields()], fire_outbound=False)
    job, _ = store.create_unless_seen(f"test-orphan-{uuid.uuid4().hex}", "Contact", rid, "outbound_message", {})
    store.r.set(f"record:Contact:{rid}:last_job", job.id)
    store.transition(job, state)
    return job.id, rid


def test_a_200_answer_whose_body_is_not_json_is_retried_not_dropped(scontrol, sstore):
    mark = last_seq(scontrol)
    scontrol.add_fault("clodura", path="/api/v1/cleanup/enrich", status=200, body="<html>maintenance</html>",
                       times=2)
    (rid,) = scontrol.create_records("Contact", [contact_fields()])
    job = final_job(sstore, "Contact", rid, timeout=60)
    assert job.state == "done", job.last_error
    broken = [e for e in scontrol.log("clodura", since=mark) if e["fault"]]
    assert len(broken) == 2


def test_a_job_left_in_a_working_state_is_revived(scontrol, sstore):
    job_id, rid = orphan_job(scontrol, sstore, State.ENRICHING)
    job = final_job(sstore, "Contact", rid, timeout=60)
    assert job.state == "done", job.last_error
    assert scontrol.record("Contact", rid)["writes"]


def test_a_job_that_keeps_getting_stuck_fails_with_its_reason(scontrol, sstore):
    job_id, rid = orphan_job(scontrol, sstore, State.VERIFYING)
    # As if it had been revived the most it may be already, each time in vain.
    sstore.r.hset(f"job:{job_id}", "revivals", MAX_REVIVALS)
    job = final_job(sstore, "Contact", rid, timeout=60)
    assert job.state == "failed"
    assert "stuck in verifying" in job.last_error


def test_a_provider_outage_parks_jobs_and_every_one_finishes_after_it(scontrol, sstore):
    mark = last_seq(scontrol)
    scontrol.add_fault("clodura", path="/api/v1/", status=503, body={"message": "down"}, times=-1,
                       for_s=OUTAGE_S)
    started = time.time()
    ids = scontrol.create_records("Contact", [contact_fields() for _ in range(10)])

    def parked_for_the_outage():
        return [j for j in map(sstore.get, sstore.ids_in_state(State.DEFERRED))
                if j and "provider unavailable" in (j.last_error or "")]

    wait_for(parked_for_the_outage, 30, "jobs parked as provider unavailable")
    jobs = [final_job(sstore, "Contact", rid, timeout=OUTAGE_S + 60) for rid in ids]
    assert {j.state for j in jobs} == {"done"}, [j.last_error for j in jobs]
    during = [e for e in scontrol.log("clodura", since=mark) if e["fault"]]
    assert during and max(e["t"] for e in during) < started + OUTAGE_S + 1
    # Without the breaker, 10 jobs retrying with backoff make ~50 calls in
    # that time; with it: the failures that open it, the calls already in
    # flight, and one probe per open period.
    assert len(during) <= BREAKER_FAILURES + 2 * CONCURRENCY + OUTAGE_S // BREAKER_OPEN_S + 2, len(during)


def test_the_state_index_is_trimmed_by_the_sweeper_and_counted_by_time(sstore):
    done = sstore.state_key(State.DONE)
    sstore.r.zadd(done, {"job-expired-long-ago": time.time() - 8 * 86_400})
    wait_for(lambda: sstore.r.zscore(done, "job-expired-long-ago") is None, 30, "the sweeper to trim the index")
    recent = sstore.counts_by_state(since=time.time() - 3600)
    assert recent[State.DONE] >= 1 and recent[State.DONE] <= sstore.counts_by_state()[State.DONE]
