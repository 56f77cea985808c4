"""Faults end with the work done once or parked visibly, never dropped."""
import os
import signal
import subprocess

from crm_enrich.dev.devstack import wait_for
from crm_enrich.jobs.store import JobStore
from crm_enrich.sandbox.dataset import build_dataset
from worker import tasks


def person(index: int):
    people = [p for p in build_dataset().people if p.known and p.email_verdict == "Deliverable"]
    return people[-1 - index]


def create_contact(control, p) -> str:
    (rid,) = control.create_records("Contact", [{"FirstName": p.first_name, "LastName": p.last_name,
                                                 "Email": p.email}])
    return rid


def salesforce_calls_since(control, mark: int) -> list[dict]:
    return control.log("salesforce", since=mark)


def last_seq(control, service: str) -> int:
    return max([e["seq"] for e in control.log(service)] or [0])


def test_expired_session_is_refreshed_once(control, job_for):
    # Warm up so the worker processes hold tokens, then expire every session.
    for i in range(3):
        job_for("Contact", create_contact(control, person(10 + i)))
    mark = last_seq(control, "salesforce")
    tokens_before = control.salesforce_usage()["tokens_issued"]
    control.http.post(f"{control.sf}/_sandbox/salesforce/expire-sessions").raise_for_status()
    rids = [create_contact(control, person(i)) for i in range(3)]
    for rid in rids:
        job = job_for("Contact", rid)
        assert job.state == "done", job.last_error
        assert len(control.record("Contact", rid)["writes"]) == 1
    calls = salesforce_calls_since(control, mark)
    assert 1 <= sum(e["status"] == 401 for e in calls) <= 2      # one per worker process at most
    assert 1 <= control.salesforce_usage()["tokens_issued"] - tokens_before <= 2


def test_permanently_rejected_token_fails_clearly_without_a_loop(control, job_for):
    mark = last_seq(control, "salesforce")
    tokens_before = control.salesforce_usage()["tokens_issued"]
    control.http.post(f"{control.sf}/_sandbox/salesforce/token-mode", json={"mode": "always_401"}).raise_for_status()
    try:
        rid = create_contact(control, person(4))
        job = job_for("Contact", rid)
    finally:
        control.http.post(f"{control.sf}/_sandbox/salesforce/token-mode", json={"mode": "normal"}).raise_for_status()
    assert job.state == "failed"
    assert "INVALID_SESSION_ID" in job.last_error
    assert control.salesforce_usage()["tokens_issued"] - tokens_before <= 2
    assert len([e for e in salesforce_calls_since(control, mark) if e["status"] == 401]) <= 2


def test_killed_worker_process_loses_nothing(stack, control, store, job_for):
    """acks_late + reject_on_worker_lost: the task of a killed pool process
    goes back to the queue and completes, with one write."""
    control.add_fault("clodura", path="/api/v1/cleanup/enrich", delay=3.0, times=1)
    p = person(5)
    rid = create_contact(control, p)

    def job_enriching():
        job_id = store.r.get(f"record:Contact:{rid}:last_job")
        return job_id and store.get(job_id).state == "enriching"

    wait_for(job_enriching, 30, "the job to be mid-enrichment")
    worker = stack.processes["worker"]
    children = subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True, text=True).stdout.split()
    assert children
    for pid in children:
        os.kill(int(pid), signal.SIGKILL)

    job = job_for("Contact", rid, timeout=90)
    assert job.state == "done", job.last_error
    assert job.attempts >= 2
    after = control.record("Contact", rid)
    assert len(after["writes"]) == 1 and after["record"]["Title"] == p.title


def test_a_message_redelivered_too_often_is_capped(stack):
    store = JobStore(stack.redis_client())
    verdicts = [tasks.over_delivery_cap(store, "task-poison-1", 0) for _ in range(tasks.MAX_DELIVERIES + 1)]
    assert verdicts == [False] * tasks.MAX_DELIVERIES + [True]
    assert not tasks.over_delivery_cap(store, "task-poison-1", 1)  # a retry is a new attempt


def test_a_lock_taken_over_by_another_caller_is_not_released_by_the_first(stack):
    """Compare-and-delete: a caller whose coalescing lock was taken over
    (it expired under a slow call) leaves the new owner's lock alone."""
    from crm_enrich import keys
    from crm_enrich.providers.cache import COALESCE_LOCK_MS, ProviderCache, canonical_key

    r = stack.redis_client()
    cache = ProviderCache(r, ttl_s=0)
    lock = keys.response_in_flight(canonical_key("enrich", {"email": "lock-test@example.com"}))

    def slow_call():
        r.set(lock, "second-caller", px=60_000)  # as if ours had expired and another took it
        return {"person": None}

    cache.fetch("enrich", {"email": "lock-test@example.com"}, slow_call, owner="first-caller")
    assert r.get(lock) == "second-caller"
    assert COALESCE_LOCK_MS >= 200_000  # longer than any call (a Clearout verify may take minutes)
    r.delete(lock)
