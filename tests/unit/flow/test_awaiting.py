"""Results that come later: the sweeper over parked jobs polls an overdue
callback, gives up at the deadline, and asks again only after a crash.
Time is passed in (`now`), never slept."""
from __future__ import annotations

import time

import pytest

from crm_enrich import keys
from crm_enrich.flow import callbacks
from crm_enrich.flow.awaiting import sweep_awaiting
from crm_enrich.flow.run import RetryLater
from crm_enrich.jobs.state import State
from crm_enrich.providers.cache import COALESCE_LOCK_MS, canonical_key, job_owner
from tests.unit.flow.harness import CONTACT_ID


def parked_for_reveal(flow) -> tuple[str, str]:
    flow.contact(Email=None)
    job_id = flow.started(flow.new_job("Contact", CONTACT_ID))
    assert flow.advance(job_id) == State.AWAITING_EMAIL
    return job_id, flow.memory(job_id)["pending:reveal_email"]["id"]


def sweep(flow, after_s: float) -> list[str]:
    resumed: list[str] = []
    sweep_awaiting(flow.svc, resumed.append, now=time.time() + after_s)
    return resumed


def test_nothing_moves_before_the_callback_is_overdue(flow):
    parked_for_reveal(flow)
    assert sweep(flow, flow.svc.settings.verify_poll_after_s - 5) == []
    assert flow.clodura.count("reveal_status") == 0


def test_an_overdue_callback_is_polled_and_a_final_answer_resumes_the_job(flow):
    job_id, tracking_id = parked_for_reveal(flow)
    poll_after = flow.svc.settings.verify_poll_after_s
    assert sweep(flow, poll_after + 1) == []                     # still in progress at Clodura
    assert flow.clodura.args("reveal_status") == [(tracking_id,)]

    flow.clodura.status_answers[tracking_id] = {"trackingId": tracking_id, "status": "completed",
                                                "email": "dana.rivers@acme.example", "creditsUsed": 3}
    assert sweep(flow, 2 * poll_after + 1) == [job_id]          # the next poll, backed off
    assert flow.memory(job_id)["result:reveal_email"]["email"] == "dana.rivers@acme.example"
    assert flow.advance(job_id) == State.WRITING
    assert flow.queued_writes()[0]["changes"]["Email"] == "dana.rivers@acme.example"


def test_polling_can_be_turned_off(make_flow):
    flow = make_flow(clodura_polling=False)
    parked_for_reveal(flow)
    assert sweep(flow, flow.svc.settings.verify_poll_after_s + 1) == []
    assert flow.clodura.count("reveal_status") == 0


def test_at_the_deadline_the_step_gives_up_and_the_job_goes_on_without_it(flow):
    job_id, tracking_id = parked_for_reveal(flow)
    assert sweep(flow, flow.svc.settings.verify_give_up_after_s + 1) == [job_id]
    result = flow.memory(job_id)["result:reveal_email"]
    assert (result["trackingId"], result["status"]) == (tracking_id, "failed")

    assert flow.advance(job_id) == State.WRITING                 # what the enrichment found is still written
    changes = flow.queued_writes()[0]["changes"]
    assert "Email" not in changes and changes["Clodura_Person_Id__c"] == "p_dana"
    assert flow.clodura.count("verify_email") == 0
    # A callback after the give-up changes nothing.
    assert not callbacks.store_result(flow.store.r, job_id, "reveal_email",
                                      {"trackingId": tracking_id, "status": "completed", "email": "late@acme.example"})


def test_a_request_whose_worker_died_is_asked_again_once_after_the_poll_delay(flow):
    flow.contact()
    job_id = flow.started(flow.new_job("Contact", CONTACT_ID))
    # The worker wrote its note, then died before Clodura's answer (no provider id).
    flow.store.save_provider_data(job_id, callbacks.pending_field("verify"), {"sent_at": time.time(), "id": None})
    assert flow.advance(job_id) == State.AWAITING_VERIFICATION   # the redelivery waits, it does not pay again
    assert flow.clodura.count("verify_email") == 0

    assert sweep(flow, 5) == []
    assert sweep(flow, flow.svc.settings.verify_poll_after_s + 1) == [job_id]
    assert flow.memory(job_id)[callbacks.pending_field("verify")]["resend"] is True   # marked to ask again
    assert flow.advance(job_id) == State.WRITING
    assert flow.clodura.count("verify_email") == 1


def _cut_verification(flow, marker_owner: str) -> tuple[str, str]:
    """A job whose verify request was cut (its note has no provider id) while
    `marker_owner` holds the request's in-flight marker."""
    flow.contact()
    job_id = flow.started(flow.new_job("Contact", CONTACT_ID))
    marker = keys.response_in_flight(canonical_key("verify", {"email": "dana@acme.example", "deep": False}))
    flow.store.r.set(marker, marker_owner(job_id), px=COALESCE_LOCK_MS)
    flow.store.save_provider_data(job_id, callbacks.pending_field("verify"), {"sent_at": time.time(), "id": None})
    assert flow.process(job_id, "task-cut") == State.AWAITING_VERIFICATION  # its redelivery waits
    assert sweep(flow, flow.svc.settings.verify_poll_after_s + 1) == [job_id]
    return job_id, marker


def test_the_resend_takes_over_the_request_its_cancelled_task_left_in_flight(flow):
    """A task cancelled mid-request (its Redis connection lost in a failover)
    leaves the request's in-flight marker behind. The job's next task (the
    sweeper's resend, a new task id) asks at once: no task of this job is
    making that request any more, so waiting out the marker (240 s) would
    leave the job parked for nothing."""
    job_id, marker = _cut_verification(flow, lambda job_id: job_owner(job_id, "task-cut"))
    assert flow.process(job_id, "task-resent") == State.WRITING
    assert flow.clodura.args("verify_email")[0][0] == "dana@acme.example"
    assert not flow.store.r.exists(marker)                        # released by its new owner


def test_a_request_in_flight_for_another_job_is_still_waited_for(flow):
    """Only the job's own dead request is taken over: another job's may be
    a live slow call, and asking again would pay twice."""
    job_id, marker = _cut_verification(flow, lambda _: job_owner("another-job", "task-live"))
    with pytest.raises(RetryLater) as wait:
        flow.process(job_id, "task-resent")
    assert wait.value.wait and flow.clodura.count("verify_email") == 0
    assert flow.store.r.get(marker) == job_owner("another-job", "task-live")


def test_a_stored_result_not_yet_used_resumes_the_job(flow):
    job_id, tracking_id = parked_for_reveal(flow)
    # The callback stored its result but could not queue the job (broker down).
    callbacks.store_result(flow.store.r, job_id, "reveal_email", {"trackingId": tracking_id, "status": "not_found"})
    assert sweep(flow, 1) == [job_id]
    assert flow.advance(job_id) == State.WRITING
    assert flow.clodura.count("reveal_email") == 1
