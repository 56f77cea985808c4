"""A large run's job on a Clearout bulk list: it parks, the list's answer
brings it back with its verdict (here as Clodura's second opinion), and a
list that falls back sends it to the instant check."""
from __future__ import annotations

import uuid

from crm_enrich import keys
from crm_enrich.flow import clearout_lists
from crm_enrich.jobs.state import State
from tests.unit.flow.harness import CONTACT_ID

LARGE = {"clearout_api_token": "ct_test", "verify_provider": "clodura_then_clearout", "clearout_bulk_threshold": 5}


def job_of_large_run(flow) -> tuple[str, str]:
    """A job of a run selecting 10 records, its record read."""
    run_id = uuid.uuid4().hex
    flow.store.r.hset(keys.run(run_id), mapping={"total": 10, "status": "queued"})
    flow.contact(Email="dana@acme.example")
    job, _ = flow.store.create_unless_seen(keys.run_record(run_id, CONTACT_ID), "Contact", CONTACT_ID, "rerun", {})
    flow.store.mark_enqueued(job.id)
    return flow.started(job.id), run_id


def resume(flow):
    return lambda job_ids, source: flow.tasks.resumed.extend(job_ids)


def parked_on_list(flow) -> tuple[str, str, dict]:
    flow.clodura.verdicts["dana@acme.example"] = "Risky"
    job_id, run_id = job_of_large_run(flow)
    assert flow.advance(job_id) == State.AWAITING_LIST
    list_key = flow.store.r.get(keys.clearout_run_list(run_id, "verify"))
    assert flow.store.r.smembers(keys.clearout_list_members(list_key)) == {job_id}
    assert flow.clearout.count("verify_email") == 0
    return job_id, list_key, flow.store.r.hgetall(keys.clearout_list(list_key))


def test_the_lists_verdict_is_the_second_opinion(make_flow):
    flow = make_flow(**LARGE)
    job_id, list_key, info = parked_on_list(flow)
    row = {"Email": "dana@acme.example", "Job Id": job_id, "Clearout Verification Status": "Invalid",
           "Clearout Safe to Send": "No", "Clearout Reason": "Mailbox not Found",
           "Clearout Verified At (UTC)": "2026-11-21T10:00:05+00:00"}
    clearout_lists._finish(flow.svc, list_key, info, {job_id: row}, resume(flow), None)
    assert job_id in flow.tasks.resumed
    assert flow.advance(job_id) == State.WRITING
    changes = next(w["changes"] for w in flow.queued_writes() if w["job_id"] == job_id)
    assert changes["Email_Verification_Status__c"] == "invalid"
    assert changes["Email_Verification_Detail__c"] == \
        "clodura standard: Risky; then clearout: invalid (bulk: Mailbox not Found; safe to send: no)"
    assert flow.clearout.count("verify_email") == 0


def test_a_list_that_falls_back_sends_the_job_to_the_instant_check(make_flow):
    flow = make_flow(**LARGE)
    job_id, list_key, info = parked_on_list(flow)
    clearout_lists._finish(flow.svc, list_key, info, {}, resume(flow), "list cancelled")
    assert flow.advance(job_id) == State.WRITING
    assert flow.clearout.args("verify_email")[0][0] == "dana@acme.example"
    assert flow.store.r.hget(keys.clearout_list(list_key), "status") == "fell_back"


def test_a_small_run_is_checked_at_once(make_flow):
    flow = make_flow(**{**LARGE, "clearout_bulk_threshold": 10})
    flow.clodura.verdicts["dana@acme.example"] = "Risky"
    job_id, _ = job_of_large_run(flow)
    assert flow.advance(job_id) == State.WRITING
    assert flow.clearout.count("verify_email") == 1
