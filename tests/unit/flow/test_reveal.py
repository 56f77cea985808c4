"""Revealing a missing email: what Clodura is asked by, and Clearout's
finder for an address Clodura did not find."""
from __future__ import annotations

from crm_enrich.flow import callbacks
from crm_enrich.jobs.state import State
from crm_enrich.providers.clearout import FinderResult
from tests.unit.flow.fakes import PERSON
from tests.unit.flow.harness import CONTACT_ID


def test_without_a_person_id_the_reveal_asks_by_linkedin(flow):
    flow.clodura.person = {**PERSON, "personId": None}
    flow.contact(Email=None)
    job_id = flow.started(flow.new_job("Contact", CONTACT_ID))
    assert flow.advance(job_id) == State.AWAITING_EMAIL
    assert flow.clodura.args("reveal_email")[0][0] == {"linkedinUrl": PERSON["linkedinUrl"]}


def test_clearouts_finder_looks_for_what_clodura_did_not_reveal(make_flow):
    flow = make_flow(clearout_finder=True, clearout_api_token="ct_test")
    flow.clearout.found["Dana Rivers|acme.example"] = FinderResult(status="found", email="d.rivers@acme.example",
                                                                  confidence=91)
    flow.contact(Email=None)
    job_id = flow.started(flow.new_job("Contact", CONTACT_ID))
    flow.advance(job_id)
    callbacks.store_result(flow.store.r, job_id, "reveal_email",
                           {"trackingId": "trk_1", "status": "not_found", "email": None, "creditsUsed": 0})
    assert flow.advance(job_id) == State.WRITING
    assert flow.clearout.args("find_email") == [("Dana Rivers", "acme.example")]
    assert flow.clodura.args("verify_email")[0][0] == "d.rivers@acme.example"
    assert flow.queued_writes()[0]["changes"]["Email"] == "d.rivers@acme.example"
    assert flow.memory(job_id)["outcome"]["email_revealed"] is True
