"""Quota and credits: every request the plan allows, never a 429, never a
wasted credit, nothing dropped. A stack of its own: two worker processes
sharing a tiny Clodura limit, and a sweeper that runs every second."""
from __future__ import annotations

import pytest

from crm_enrich.dev.devstack import Stack, wait_for
from crm_enrich.jobs.store import JobStore
from crm_enrich.providers.quota import Quota, SpendingPaused
from crm_enrich.sandbox.control import SandboxControl
from crm_enrich.sandbox.dataset import build_dataset
from tests.integration.conftest import final_job

TINY = [[3, 1], [30, 60]]


@pytest.fixture(scope="module")
def qstack(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("quota"), worker_concurrency=1, extra_env={
            "CLODURA_RATE_LIMITS": "3/second;30/minute", "SWEEP_INTERVAL_S": "1",
            "CREDITS_CHECK_INTERVAL_S": "1"}) as stack:
        stack.start_worker("worker2", concurrency=1)
        yield stack


@pytest.fixture
def qcontrol(qstack):
    control = SandboxControl(qstack.sandbox.info)
    key = qstack.sandbox.info["clodura_api_key"]
    control.http.post(f"{control.clodura}/_sandbox/clodura/config",
                      json={"rate_limits": {key: TINY}, "day_seconds": 86400}).raise_for_status()
    yield control
    control.http.post(f"{control.clodura}/_sandbox/clodura/config",
                      json={"rate_limits": {key: TINY}, "day_seconds": 86400}).raise_for_status()
    control.http.post(f"{control.clodura}/_sandbox/clodura/credits",
                      json={"key": key, "remainingCredits": 10000}).raise_for_status()


@pytest.fixture
def qstore(qstack):
    return JobStore(qstack.redis_client())


_people = iter([p for p in build_dataset().people if p.known and p.email_verdict == "Deliverable"][200:])


def contact_fields():
    p = next(_people)
    return {"FirstName": p.first_name, "LastName": p.last_name, "Email": p.email}


def clodura_calls(control, since, path=None):
    return [e for e in control.log("clodura", since=since)
            if path is None or e["path"] == path]


def seq(control):
    return max([e["seq"] for e in control.log("clodura")] or [0])


def test_two_workers_sharing_a_tiny_limit_never_exceed_it(qstack, qcontrol, qstore):
    mark = seq(qcontrol)
    ids = qcontrol.create_records("Contact", [contact_fields() for _ in range(10)])
    jobs = [final_job(qstore, "Contact", rid, timeout=90) for rid in ids]
    assert {j.state for j in jobs} == {"done"}
    calls = clodura_calls(qcontrol, mark)
    assert [e for e in calls if e["status"] == 429] == []
    times = sorted(e["t"] for e in calls)
    assert len(times) >= 18  # ~2 calls per record really went out
    busiest_second = max(sum(1 for t in times if start <= t < start + 1) for start in times)
    assert busiest_second <= 3


def test_daily_quota_409_defers_and_the_job_completes_after_the_reset(qstack, qcontrol, qstore):
    key = qstack.sandbox.info["clodura_api_key"]
    # A 10-second "day" of 4 requests, used up by another client of the same key.
    qcontrol.http.post(f"{qcontrol.clodura}/_sandbox/clodura/config",
                       json={"rate_limits": {key: TINY + [[4, 10]]}, "day_seconds": 10}).raise_for_status()
    for _ in range(10):
        answer = qcontrol.http.post(f"{qcontrol.clodura}/api/v1/verify/email", headers={"X-API-KEY": key},
                                    json={"email": "someone@example.test"})
        if answer.status_code == 409:
            break
    assert answer.status_code == 409
    mark = seq(qcontrol)
    (rid,) = qcontrol.create_records("Contact", [contact_fields()])
    job = final_job(qstore, "Contact", rid, timeout=60)
    assert job.state == "done", job.last_error
    assert "deferred" in [s["state"] for s in job.steps]
    assert [e["status"] for e in clodura_calls(qcontrol, mark)].count(409) == 1  # then it waited


def test_no_credits_402_pauses_and_the_job_completes_after_a_top_up(qstack, qcontrol, qstore):
    key = qstack.sandbox.info["clodura_api_key"]
    qcontrol.http.post(f"{qcontrol.clodura}/_sandbox/clodura/credits",
                       json={"key": key, "remainingCredits": 0}).raise_for_status()
    (rid,) = qcontrol.create_records("Contact", [contact_fields()])

    def paused():
        job_id = qstore.r.get(f"record:Contact:{rid}:last_job")
        return job_id and qstore.get(job_id).state == "paused"

    wait_for(paused, 60, "the job to pause for credits")
    qcontrol.http.post(f"{qcontrol.clodura}/_sandbox/clodura/credits",
                       json={"key": key, "remainingCredits": 50}).raise_for_status()
    job = final_job(qstore, "Contact", rid, timeout=60)
    assert job.state == "done", job.last_error
    assert qcontrol.record("Contact", rid)["record"]["Title"]


def test_same_contact_twice_within_a_day_costs_one_call(qstack, qcontrol, qstore):
    fields = contact_fields()
    mark = seq(qcontrol)
    (first,) = qcontrol.create_records("Contact", [fields])
    assert final_job(qstore, "Contact", first, timeout=90).state == "done"
    (second,) = qcontrol.create_records("Contact", [fields])
    assert final_job(qstore, "Contact", second, timeout=90).state == "done"
    assert len(clodura_calls(qcontrol, mark, "/api/v1/cleanup/enrich")) == 1
    assert len(clodura_calls(qcontrol, mark, "/api/v1/verify/email")) == 1
    assert qcontrol.record("Contact", second)["record"]["Title"] == qcontrol.record("Contact", first)["record"]["Title"]


def test_same_contact_twice_at_the_same_moment_costs_one_call(qstack, qcontrol, qstore):
    fields = contact_fields()
    mark = seq(qcontrol)
    ids = qcontrol.create_records("Contact", [fields, dict(fields)])
    assert [final_job(qstore, "Contact", rid, timeout=90).state for rid in ids] == ["done", "done"]
    assert len(clodura_calls(qcontrol, mark, "/api/v1/cleanup/enrich")) == 1
    assert len(clodura_calls(qcontrol, mark, "/api/v1/verify/email")) == 1


def test_cached_provider_data_never_lives_beyond_a_day(qstack, qstore):
    keys = list(qstore.r.scan_iter("cache:*")) + list(qstore.r.scan_iter("job:*:provider"))
    keys = [k for k in keys if not k.endswith(":inflight")]
    assert keys
    ttls = [qstore.r.ttl(k) for k in keys]
    assert all(0 < ttl <= 86_400 for ttl in ttls), ttls


def test_daily_credit_budget_pauses_spending(qstack):
    quota = Quota(qstack.redis_client(), daily_budget=3.0)
    quota.r.delete(*quota.r.keys("credits:clodura:*") or ["none"])
    quota.reserve("enrich", "job-a")     # 0 + 0 reserved + 2 ≤ 3
    with pytest.raises(SpendingPaused, match="held by requests in flight"):
        quota.reserve("enrich", "job-b")  # 0 + 2 reserved + 2 > 3: reserved counts before it is spent
    assert not quota.budget_paused()      # it may fit once job-a's answer says what it cost
    quota.settle("enrich", "job-a", 2.0)
    assert quota.spent_today() == 2.0 and quota.reserved() == 0
    with pytest.raises(SpendingPaused, match="budget"):
        quota.reserve("enrich", "job-b")  # 2 + 2 > 3
    assert quota.budget_paused()
    quota.r.delete("clodura:budget_paused_until")
