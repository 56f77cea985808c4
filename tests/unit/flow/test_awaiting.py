"""Results that come later: the sweeper over parked jobs polls an overdue
callback, gives up at the deadline, and asks again only after a crash.
Time is passed in (`now`), never slept."""
from __future__ import annotations

import time

from crm_enrich.flow import callbacks
from crm_enrich.flow.awaiting import sweep_awaiting
from crm_enrich.jobs.state import State
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


def test_a_stored_result_not_yet_used_resumes_the_job(flow):
    job_id, tracking_id = parked_for_reveal(flow)
    # The callback stored its result but could not queue the job (broker down).
    callbacks.store_result(flow.store.r, job_id, "reveal_email", {"trackingId": tracking_id, "status": "not_found"})
    assert sweep(flow, 1) == [job_id]
    assert flow.advance(job_id) == State.WRITING
    assert flow.clodura.count("reveal_email") == 1
