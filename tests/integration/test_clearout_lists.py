"""Large runs go to Clearout as bulk lists. A stack of its own: Clearout
verifies (VERIFY_PROVIDER=clearout) and finds (CLEAROUT_FINDER=true), a
run of more than 5 records uses lists, and the sweeper looks every second.
Email_Type__c is mapped, with no attribute checks allowed: a listed
address's type comes from its result row."""
from __future__ import annotations

import signal
import uuid

import pytest
import requests

from crm_enrich import keys
from crm_enrich.dev.devstack import Stack, wait_for
from crm_enrich.jobs.store import JobStore
from crm_enrich.operations import runs
from crm_enrich.sandbox.control import SandboxControl
from crm_enrich.sandbox.dataset import build_dataset
from tests.integration.conftest import map_with_email_type
from tests.integration.helpers import states

THRESHOLD = 5
DATASET = build_dataset()
COMPANIES = {c.organisation_id: c for c in DATASET.companies}
# Deliverable addresses at ordinary companies: Clearout calls them valid.
_KNOWN = iter([p for p in DATASET.people if p.known and p.email_verdict == "Deliverable"
               and not COMPANIES[p.organisation_id].catch_all][200:])
# People Clodura has never heard of (Clearout knows everyone).
_UNKNOWN = iter([p for p in DATASET.people if not p.known and p.email_verdict == "Deliverable"
                 and not COMPANIES[p.organisation_id].catch_all])


@pytest.fixture(scope="module")
def lstack(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("lists")
    with Stack(state_dir, worker_concurrency=2, extra_env={
            "VERIFY_PROVIDER": "clearout", "CLEAROUT_FINDER": "true", "FIELD_MAP": str(map_with_email_type(state_dir)),
            "CLEAROUT_BULK_THRESHOLD": str(THRESHOLD), "CLEAROUT_BULK_POLL_S": "1",
            "CLEAROUT_BULK_COLLECT_S": "120", "SWEEP_INTERVAL_S": "1"}) as stack:
        yield stack


@pytest.fixture
def lcontrol(lstack):
    control = SandboxControl(lstack.sandbox.info)
    yield control
    control.clearout_config(bulk_outcome="complete", bulk_rows_per_s=50)


@pytest.fixture
def lstore(lstack):
    return JobStore(lstack.redis_client())


def contacts(control, known: int, unknown: int = 0) -> list[str]:
    """Contacts at their Accounts, created quietly: `known` with their
    email, `unknown` (people Clodura cannot reveal) without."""
    people = [(next(_KNOWN), True) for _ in range(known)] + [(next(_UNKNOWN), False) for _ in range(unknown)]
    accounts = control.create_accounts(sorted({COMPANIES[p.organisation_id].name for p, _ in people}))
    return control.create_records("Contact", [
        {"FirstName": p.first_name, "LastName": p.last_name, "Email": p.email if with_email else None,
         "AccountId": accounts[COMPANIES[p.organisation_id].name]}
        for p, with_email in people], fire_outbound=False)


def rerun(stack, ids: list[str]) -> str:
    resp = requests.post(f"{stack.web_url}/admin/rerun", json={"object": "Contact", "ids": ids}, timeout=30,
                         headers={"Authorization": f"Bearer {stack.admin_token}"})
    assert resp.status_code == 202, resp.text
    return resp.json()["runId"]


def run_jobs(store: JobStore, run_id: str, count: int, timeout: float = 120):
    """The run's jobs, once all are final."""
    def final():
        jobs = [store.get(job_id) for job_id in store.r.smembers(runs.run_jobs_key(run_id))]
        return jobs if len(jobs) == count and all(job and job.final for job in jobs) else None
    return wait_for(final, timeout, f"{count} final jobs of run {run_id}", interval=0.2)


def calls_since(control, mark: int, path: str) -> list[dict]:
    return [e for e in control.log("clearout", since=mark) if e["path"] == path]


def mark(control) -> int:
    return max([e["seq"] for e in control.log("clearout")] or [0])


def lists_of(store: JobStore, run_id: str) -> list[dict]:
    return [store.r.hgetall(keys.clearout_list(key)) for key in store.r.smembers(keys.clearout_run_lists(run_id))]


def test_a_large_run_is_verified_and_found_by_one_list_each(lstack, lcontrol, lstore):
    ids = contacts(lcontrol, known=8, unknown=4)
    since = mark(lcontrol)
    run_id = rerun(lstack, ids)

    jobs = run_jobs(lstore, run_id, len(ids))
    assert all(job.state == "done" for job in jobs), [(job.state, job.last_error) for job in jobs]
    assert all("awaiting_list" in states(job) for job in jobs)
    for rid in ids:
        record = lcontrol.record("Contact", rid)["record"]
        assert record["Email"], rid  # the four without one got theirs from the finder's list
        assert record["Email_Verification_Status__c"] == "valid"
        assert record["Email_Verification_Detail__c"].startswith("clearout: valid (bulk: Success"), record
        assert record["Email_Type__c"] == "business", record  # from the row's account-status columns

    # One upload per kind, every address on it; no instant call at all.
    verify_uploads = calls_since(lcontrol, since, "/v2/email_verify/bulk")
    finder_uploads = calls_since(lcontrol, since, "/v2/email_finder/bulk")
    assert [e["rows"] for e in verify_uploads] == [12]
    assert [e["rows"] for e in finder_uploads] == [4]
    assert calls_since(lcontrol, since, "/v2/email_verify/instant") == []
    assert calls_since(lcontrol, since, "/v2/email_finder/instant") == []
    view = requests.get(f"{lstack.web_url}/admin/runs/{run_id}", timeout=30,
                        headers={"Authorization": f"Bearer {lstack.admin_token}"}).json()
    assert sorted((lst["kind"], lst["status"], lst["rows"], lst["answered"]) for lst in view["clearoutLists"]) \
        == [("finder", "done", 4, 4), ("verify", "done", 12, 12)]
    # Removed at Clearout once read; no address kept beside the list in Redis.
    assert len(calls_since(lcontrol, since, "/v2/email_verify/list/remove")) == 1
    for key in lstore.r.scan_iter("clearout:*"):
        held = lstore.r.hgetall(key) if lstore.r.type(key) == "hash" else {}
        assert not any("@" in value for value in held.values()), key


@pytest.mark.parametrize("outcome, instant", [("cancel", 4), ("fail", 8)])
def test_a_cancelled_or_failed_list_falls_back_to_instant_checks(lstack, lcontrol, lstore, outcome, instant):
    lcontrol.clearout_config(bulk_outcome=outcome)  # half way through, as if a person cancelled it
    ids = contacts(lcontrol, known=8)
    since = mark(lcontrol)
    run_id = rerun(lstack, ids)

    jobs = run_jobs(lstore, run_id, len(ids))
    assert all(job.state == "done" for job in jobs), [(job.state, job.last_error) for job in jobs]
    assert all(lcontrol.record("Contact", rid)["record"]["Email_Verification_Status__c"] == "valid"
               for rid in ids)
    assert len(calls_since(lcontrol, since, "/v2/email_verify/bulk")) == 1
    # A cancelled list keeps the rows it verified; only the others are asked again.
    assert len(calls_since(lcontrol, since, "/v2/email_verify/instant")) == instant
    (info,) = lists_of(lstore, run_id)
    assert info["status"] == "fell_back" and int(info["answered"]) == 8 - instant


def test_a_worker_killed_while_the_list_runs_loses_nothing(lstack, lcontrol, lstore):
    lcontrol.clearout_config(bulk_rows_per_s=1)  # 8 rows: 8 s at Clearout
    ids = contacts(lcontrol, known=8)
    since = mark(lcontrol)
    run_id = rerun(lstack, ids)
    wait_for(lambda: [info for info in lists_of(lstore, run_id) if info.get("status") == "uploaded"], 90,
             "the list uploaded", interval=0.2)

    lstack.stop_process("worker", signal.SIGKILL)
    lstack.start_worker()

    jobs = run_jobs(lstore, run_id, len(ids), timeout=180)
    assert all(job.state == "done" for job in jobs), [(job.state, job.last_error) for job in jobs]
    assert len(calls_since(lcontrol, since, "/v2/email_verify/bulk")) == 1
    assert calls_since(lcontrol, since, "/v2/email_verify/instant") == []


def test_a_run_under_the_threshold_is_verified_one_by_one(lstack, lcontrol, lstore):
    ids = contacts(lcontrol, known=THRESHOLD)
    since = mark(lcontrol)
    run_id = rerun(lstack, ids)

    jobs = run_jobs(lstore, run_id, len(ids))
    assert all(job.state == "done" and "awaiting_list" not in states(job) for job in jobs)
    assert len(calls_since(lcontrol, since, "/v2/email_verify/instant")) == THRESHOLD
    assert calls_since(lcontrol, since, "/v2/email_verify/bulk") == []
    assert lists_of(lstore, run_id) == []


def test_bad_list_requests_get_clear_refusals(lstack, lcontrol):
    """The simulator's bulk endpoints answer as the contract says."""
    info = lstack.sandbox.info
    http = lcontrol.http  # trusts the sandbox's CA
    http.headers["Authorization"] = f"Bearer {info['clearout_api_token']}"
    base = info["clearout_url"]
    no_file = http.post(f"{base}/email_verify/bulk", data={"optimize": "highest_accuracy"})
    assert no_file.status_code == 400 and no_file.json()["error"]["reasons"][0]["field"] == ["file"]
    no_column = http.post(f"{base}/email_verify/bulk", files={"file": ("x.csv", b"Name\nAda\n", "text/csv")})
    assert no_column.json()["error"]["code"] == 1004
    unknown = http.get(f"{base}/email_verify/bulk/progress_status", params={"list_id": uuid.uuid4().hex[:24]})
    assert unknown.status_code == 200 and unknown.json()["error"]["code"] == 1029
    lcontrol.clearout_config(credits=3)
    try:
        short = http.post(f"{base}/email_verify/bulk", files={
            "file": ("y.csv", b"Email\n" + b"".join(f"p{i}@acme-test.com\n".encode() for i in range(5)), "text/csv")})
        assert short.status_code == 402 and short.json()["error"]["additional_info"] == {"required_credits": 2}
    finally:
        lcontrol.clearout_config(credits=100_000)
