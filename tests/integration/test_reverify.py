"""Scheduled re-verification of old email verdicts. A stack of its own whose
beat triggers a run every second: verdicts older than 30 days are
re-verified, at most 3 records a run, within half of a 100-credit daily
budget. Each test starts with that share spent (runs select nothing), makes
its records, then opens the budget as far as it needs."""
from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests

from crm_enrich.dev.devstack import Stack, wait_for
from crm_enrich.jobs.store import JobStore
from crm_enrich.operations import operator_input, reverify, runs
from crm_enrich.providers import quota
from crm_enrich.queues import REVERIFY_SOURCE
from crm_enrich.sandbox.control import SandboxControl
from crm_enrich.sandbox.dataset import build_dataset
from crm_enrich.sandbox.salesforce import parse_dt

AFTER_DAYS = 30
CAP = 3
BUDGET = 100.0
SHARE = 0.5
VERIFY = quota.COSTS["verify"]


@pytest.fixture(scope="module")
def rstack(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("reverify"), worker_concurrency=2, extra_env={
            "REVERIFY_AFTER_DAYS": str(AFTER_DAYS), "REVERIFY_INTERVAL_S": "1",
            "REVERIFY_MAX_PER_RUN": str(CAP), "REVERIFY_BUDGET_SHARE": str(SHARE),
            "CLODURA_DAILY_CREDIT_BUDGET": str(BUDGET)}) as stack:
        yield stack


@pytest.fixture
def rcontrol(rstack):
    return SandboxControl(rstack.sandbox.info)


@pytest.fixture
def rstore(rstack):
    return JobStore(rstack.redis_client())


@pytest.fixture
def closed(rstack, rstore):
    """The re-verification share of today's budget is spent: a trigger seen
    after this selected nothing. Closed again after the test."""
    set_spent(rstore, BUDGET * SHARE)
    wait_trigger(rstore, time.time(), "no_budget")
    yield
    rstore.r.delete(quota.BUDGET_PAUSED_UNTIL)
    set_spent(rstore, BUDGET * SHARE)


_people = iter([p for p in build_dataset().people if p.known and p.email_verdict == "Deliverable"][400:])


def set_spent(store: JobStore, credits: float) -> None:
    store.r.set(f"credits:clodura:spent:{quota.today()}", credits)


def wait_trigger(store: JobStore, after: float, outcome: str, timeout: float = 30) -> dict:
    """The first trigger to finish after `after` with this outcome."""
    def seen():
        last = store.r.hgetall(reverify.LAST_KEY)
        return last if last and float(last["at"]) > after and last["outcome"] == outcome else None
    return wait_for(seen, timeout, f"a re-verification trigger ending {outcome}", interval=0.1)


def verified_days_ago(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def make(control, object_type: str, days_ago: float | None, email: bool = True) -> str:
    p = next(_people)
    fields = {"FirstName": p.first_name, "LastName": f"Rv{uuid.uuid4().hex[:6]}", "Title": "Keep Me",
              "Email": p.email if email else None,
              "Email_Verified_At__c": verified_days_ago(days_ago) if days_ago is not None else None,
              "Email_Verification_Status__c": "invalid" if days_ago is not None else None,
              "Email_Verification_Detail__c": "an old verdict" if days_ago is not None else None}
    if object_type == "Lead":
        fields["Company"] = "Old Verdicts Ltd"
    (rid,) = control.create_records(object_type, [fields], fire_outbound=False)
    return rid


def record(control, object_type: str, rid: str) -> dict:
    return control.record(object_type, rid)["record"]


def reverified_since(control, object_type: str, rid: str, since: float) -> bool:
    at = record(control, object_type, rid)["Email_Verified_At__c"]
    return at is not None and parse_dt(at).timestamp() >= since - 1


def get_run(stack, run_id: str) -> dict:
    return requests.get(f"{stack.web_url}/admin/runs/{run_id}", timeout=10,
                        headers={"Authorization": f"Bearer {stack.admin_token}"}).json()


def runs_since(stack, store: JobStore, since: float) -> list[dict]:
    """Re-verification runs started after `since`, oldest first, as GET
    /admin/runs/<id> shows them."""
    found = [get_run(stack, run_id) for run_id in reversed(store.r.lrange(reverify.RUNS_KEY, 0, -1))]
    return [run for run in found if run["createdAt"] > since]


def run_records(store: JobStore, run_id: str) -> set[str]:
    return {store.get(job_id).record_id for job_id in store.r.smembers(runs.run_jobs_key(run_id))}


def seq(control, service: str) -> int:
    return max([e["seq"] for e in control.log(service)] or [0])


def test_old_verdicts_are_reverified_oldest_first_a_capped_run_at_a_time(rstack, rcontrol, rstore, closed):
    # Five Contacts and a Lead verified 40+ days ago (the oldest first), and
    # records that are not due: verified 2 days ago, never verified, no email.
    old = [make(rcontrol, "Contact", 40 + 5 - i) for i in range(5)]
    old_lead = make(rcontrol, "Lead", 35)
    recent = make(rcontrol, "Contact", 2)
    never = make(rcontrol, "Contact", None)
    no_email = make(rcontrol, "Contact", 50, email=False)
    before = {rid: record(rcontrol, "Contact", rid) for rid in [recent, never, no_email]}
    clodura_mark, start = seq(rcontrol, "clodura"), time.time()

    set_spent(rstore, 0)  # plenty of budget: the per-run cap decides
    wait_for(lambda: all(reverified_since(rcontrol, "Contact", rid, start) for rid in old)
             and reverified_since(rcontrol, "Lead", old_lead, start), 90, "the old verdicts to be renewed",
             interval=0.3)

    # Runs of kind "reverify", capped at 3 records per trigger, oldest first:
    # the 3 oldest Contacts, then the other 2 with the Lead.
    started = runs_since(rstack, rstore, start)
    assert [(r["kind"], r["object"], r["total"]) for r in started] == [
        ("reverify", "Contact", 3), ("reverify", "Contact", 2), ("reverify", "Lead", 1)]
    assert [r["limit"] for r in started] == [3, 2, 1]
    assert run_records(rstore, started[0]["runId"]) == set(old[:3])
    assert run_records(rstore, started[1]["runId"]) == set(old[3:])
    assert run_records(rstore, started[2]["runId"]) == {old_lead}
    jobs = [rstore.get(job_id) for run in started for job_id in rstore.r.smembers(runs.run_jobs_key(run["runId"]))]
    assert len(jobs) == 6 and {(j.source, j.force, j.state) for j in jobs} == {(REVERIFY_SOURCE, True, "done")}

    # A fresh verdict is written; nothing else is touched.
    for object_type, rid in [("Contact", r) for r in old] + [("Lead", old_lead)]:
        rec = record(rcontrol, object_type, rid)
        assert rec["Email_Verification_Status__c"] == "valid"
        assert rec["Email_Verification_Detail__c"].startswith("clodura standard")
        assert rec["Title"] == "Keep Me" and rec["Enriched_At__c"] is None
        (write,) = rcontrol.record(object_type, rid)["writes"]
        assert set(write["fields"]) <= {"Email_Verified_At__c", "Email_Verification_Status__c",
                                        "Email_Verification_Detail__c"}

    # Each email verified once, bypassing the cache; no enrichment, no reveal.
    calls = rcontrol.log("clodura", since=clodura_mark)
    assert sorted(e["path"] for e in calls) == ["/api/v1/verify/email"] * 6
    for rid in [recent, never, no_email]:
        assert record(rcontrol, "Contact", rid) == before[rid]
        assert rstore.r.get(f"record:Contact:{rid}:last_job") is None

    # Renewed verdicts are no longer due: the next trigger finds nothing.
    wait_trigger(rstore, time.time(), "nothing_due")
    assert len(runs_since(rstack, rstore, start)) == 3
    assert all(r["status"] == "finished" for r in runs_since(rstack, rstore, start))


def test_a_run_selects_no_more_than_the_budget_share_left_pays_for(rstack, rcontrol, rstore, closed):
    old = [make(rcontrol, "Contact", 60 - i) for i in range(4)]
    clodura_mark, start = seq(rcontrol, "clodura"), time.time()

    set_spent(rstore, BUDGET * SHARE - 2 * VERIFY)  # room for two verifications
    wait_for(lambda: all(reverified_since(rcontrol, "Contact", rid, start) for rid in old[:2]), 60,
             "the two oldest verdicts to be renewed", interval=0.3)
    done_at = time.time()
    # The two verifications used the share up: triggers now select nothing.
    wait_trigger(rstore, done_at, "no_budget")

    started = runs_since(rstack, rstore, start)
    assert [(r["object"], r["total"]) for r in started] == [("Contact", 2)]
    assert run_records(rstore, started[0]["runId"]) == set(old[:2])
    calls = rcontrol.log("clodura", since=clodura_mark)
    assert [e["path"] for e in calls] == ["/api/v1/verify/email"] * 2
    assert sum(e["credits"] for e in calls) == pytest.approx(2 * VERIFY)
    for rid in old[2:]:
        assert record(rcontrol, "Contact", rid)["Email_Verification_Detail__c"] == "an old verdict"
        assert rstore.r.get(f"record:Contact:{rid}:last_job") is None
        rcontrol.http.post(f"{rcontrol.sf}/_sandbox/salesforce/records/Contact/{rid}/delete").raise_for_status()


def test_nothing_is_selected_while_the_budget_is_paused(rstack, rcontrol, rstore, closed):
    rid = make(rcontrol, "Contact", 90)
    sf_mark = seq(rcontrol, "salesforce")
    # The pipeline paused spending for the day: re-verification waits too,
    # though its share of the budget is free again.
    rstore.r.set(quota.BUDGET_PAUSED_UNTIL, time.time() + 3600)
    set_spent(rstore, 0)
    wait_trigger(rstore, time.time(), "spending_paused")
    wait_trigger(rstore, time.time(), "spending_paused")  # and again: nothing in between started
    assert rstore.r.get(f"record:Contact:{rid}:last_job") is None
    assert record(rcontrol, "Contact", rid)["Email_Verification_Detail__c"] == "an old verdict"
    # Not even a count was made.
    assert [e for e in rcontrol.log("salesforce", since=sf_mark) if "/query" in e["path"]] == []
    rcontrol.http.post(f"{rcontrol.sf}/_sandbox/salesforce/records/Contact/{rid}/delete").raise_for_status()


def test_a_run_whose_selection_task_was_lost_gets_it_sent_again(rstack, rcontrol, rstore, closed):
    rid = make(rcontrol, "Contact", 70)
    # As if a trigger had tracked a run 16 minutes ago and died before
    # sending its selection task.
    where = reverify.reverify_condition(
        "Email_Verified_At__c", reverify.cutoff_literal(datetime.now(UTC), AFTER_DAYS))
    run_id = runs.create_run(rstore.r, operator_input.RerunRequest(
        object="Contact", kind="reverify", where=where, force=True, order_by="Email_Verified_At__c", limit=1),
        total=1, status="selecting")
    rstore.r.hset(runs.run_key(run_id), "created_at", time.time() - reverify.SELECTION_STALLED_S - 60)
    rstore.r.lpush(reverify.RUNS_KEY, run_id)
    start = time.time()

    wait_for(lambda: reverified_since(rcontrol, "Contact", rid, start), 60, "the lost run's record to be renewed",
             interval=0.3)
    run = wait_for(lambda: get_run(rstack, run_id)["status"] == "finished" and get_run(rstack, run_id), 30,
                   "the run to finish")
    assert run["kind"] == "reverify" and run["jobs"] == {"done": 1}
    assert run_records(rstore, run_id) == {rid}
    assert float(rstore.r.hget(runs.run_key(run_id), "resent_at")) >= start
