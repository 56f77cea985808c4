"""A Contact's or Lead's job through advance_person, with fake providers and
a fake org: what is asked, what is paid, what is queued for writing, and
that a replayed run pays nothing twice."""
from __future__ import annotations

import pytest

from crm_enrich.flow import callbacks
from crm_enrich.flow.account import HINT
from crm_enrich.jobs.state import State
from crm_enrich.providers.errors import ProviderUnavailable
from crm_enrich.queues import FLUSH_READS
from crm_enrich.salesforce.gateway import SalesforceFailure
from tests.unit.flow.fakes import PERSON, VERIFIED_AT, salesforce_busy
from tests.unit.flow.harness import ACCOUNT_ID, CONTACT_ID, LEAD_ID

EMAIL = "dana@acme.example"


def step_states(job) -> list[str]:
    return [step["state"] for step in job.steps]


def test_a_contact_with_an_email_is_enriched_once_verified_and_queued_for_one_write(flow):
    flow.contact(Title=None)
    job_id = flow.new_job("Contact", CONTACT_ID)

    # First run: the event did not carry every field, so the record is read in a batch.
    assert flow.advance(job_id) == State.RECEIVED
    assert flow.tasks.scheduled == [(FLUSH_READS, 0)]
    assert flow.clodura.calls == []
    assert flow.read_batch() == 1
    ((object_type, ids, fields),) = flow.salesforce.args("read_records")
    assert (object_type, ids) == ("Contact", [CONTACT_ID])
    assert {"Email", "LastModifiedById", "Title", "Email_Verification_Status__c"} <= set(fields)
    assert flow.tasks.resumed == [job_id]

    # Second run: enrich, verify, write back.
    assert flow.advance(job_id) == State.WRITING
    assert flow.clodura.args("enrich_contact") == [
        ({"email": EMAIL, "firstName": "Dana", "lastName": "Rivers", "organisationName": "Acme Inc"},)]
    ((email, deep, url),) = flow.clodura.args("verify_email")
    assert (email, deep) == (EMAIL, False)
    assert callbacks.read_token(flow.svc.settings, url.rsplit("/", 1)[1]) == (job_id, "verify")

    (write,) = flow.queued_writes()
    assert (write["job_id"], write["object"], write["record_id"]) == (job_id, "Contact", CONTACT_ID)
    assert write["urgent"] is True            # an event's record goes ahead of bulk work
    # Tracked and always fields are remembered (by hash): the change log tells ours from a person's.
    assert "LinkedIn_URL__c" in write["tracked"] and "Title" not in write["tracked"]
    changes = dict(write["changes"])
    assert changes.pop("Enriched_At__c").endswith("Z")
    assert changes == {
        "Title": "VP Sales",
        "Department": "Sales",
        "LinkedIn_URL__c": PERSON["linkedinUrl"],
        "Email_Verification_Status__c": "valid",
        "Email_Verification_Detail__c": "clodura standard: Deliverable",
        "Email_Verified_At__c": VERIFIED_AT,
        "Clodura_Person_Id__c": "p_dana",
    }
    job = flow.job(job_id)
    assert step_states(job) == [State.ENRICHING, State.VERIFYING, State.WRITING]
    assert set(flow.store.ids_in_state(State.WRITING)) == {job_id}
    assert flow.spent() == pytest.approx(2.04)           # a person (2) and a standard check (0.04)
    assert flow.memory(job_id)["outcome"] == {"matched": True, "verdict": "valid", "email_revealed": False,
                                              "email_found_by": None, "phone_revealed": False}

    # The flush writes it and ends the job.
    assert flow.write_batch() == 1
    assert flow.job(job_id).state == State.DONE
    assert flow.job(job_id).fields_written == sorted(write["changes"])
    assert flow.salesforce.records[("Contact", CONTACT_ID)]["Title"] == "VP Sales"


def test_a_replayed_run_does_not_pay_for_the_person_again(make_flow):
    # The response cache is off, so only the job's own memory can prevent a second enrich.
    flow = make_flow(cache_ttl_s=0)
    flow.contact()
    job_id = flow.started(flow.new_job("Contact", CONTACT_ID))
    flow.clodura.fail("verify_email", ProviderUnavailable("/api/v1/verify/email: 503", 503))

    with pytest.raises(ProviderUnavailable):
        flow.advance(job_id)
    assert flow.memory(job_id)["person"]["personId"] == "p_dana"   # kept before the next step ran
    assert "pending:verify" not in flow.memory(job_id)              # a failed request is not waited for

    assert flow.advance(job_id) == State.WRITING                    # the replay
    assert flow.clodura.count("enrich_contact") == 1
    assert flow.clodura.count("verify_email") == 2
    assert flow.spent() == pytest.approx(2.04)
    assert len(flow.queued_writes()) == 1


def test_a_replayed_run_after_the_verdict_pays_for_nothing(make_flow):
    flow = make_flow(cache_ttl_s=0)
    flow.contact()
    job_id = flow.started(flow.new_job("Contact", CONTACT_ID))
    flow.salesforce.fail("describe", salesforce_busy())   # write_back fails
    with pytest.raises(SalesforceFailure):
        flow.advance(job_id)
    assert flow.job(job_id).state == State.VERIFYING

    assert flow.advance(job_id) == State.WRITING
    assert (flow.clodura.count("enrich_contact"), flow.clodura.count("verify_email")) == (1, 1)
    assert flow.spent() == pytest.approx(2.04)


def test_without_an_email_the_job_asks_for_a_reveal_parks_and_goes_on_when_the_result_is_stored(flow):
    flow.contact(Email=None)
    job_id = flow.started(flow.new_job("Contact", CONTACT_ID))

    assert flow.advance(job_id) == State.AWAITING_EMAIL
    ((ids, url),) = flow.clodura.args("reveal_email")
    assert ids == {"personId": "p_dana"}                   # the strongest identifier: Clodura's own id
    assert callbacks.read_token(flow.svc.settings, url.rsplit("/", 1)[1]) == (job_id, "reveal_email")
    tracking_id = flow.memory(job_id)["pending:reveal_email"]["id"]
    assert tracking_id is not None
    assert flow.clodura.count("verify_email") == 0
    assert flow.queued_writes() == []

    # Run again before the result came (a redelivery): nothing is asked twice.
    assert flow.advance(job_id) == State.AWAITING_EMAIL
    assert flow.clodura.count("reveal_email") == 1

    # The callback stores the result; the next run verifies the revealed address.
    assert callbacks.store_result(flow.store.r, job_id, "reveal_email", {
        "trackingId": tracking_id, "status": "completed", "email": "dana.rivers@acme.example",
        "emailStatus": "verified", "creditsUsed": 3})
    assert flow.advance(job_id) == State.WRITING
    assert [args[:2] for args in flow.clodura.args("verify_email")] == [("dana.rivers@acme.example", False)]
    (write,) = flow.queued_writes()
    assert write["changes"]["Email"] == "dana.rivers@acme.example"
    assert write["changes"]["Email_Verification_Status__c"] == "valid"
    assert flow.clodura.count("enrich_contact") == 1
    assert flow.spent() == pytest.approx(2 + 3 + 0.04)    # the reveal is charged when its result comes
    assert flow.memory(job_id)["outcome"]["email_revealed"] is True
    assert step_states(flow.job(job_id)) == [State.ENRICHING, State.AWAITING_EMAIL, State.VERIFYING,
                                             State.WRITING]


def test_a_revealed_address_on_a_catch_all_domain_gets_the_deep_check(flow):
    flow.contact(Email=None)
    job_id = flow.started(flow.new_job("Contact", CONTACT_ID))
    flow.advance(job_id)
    callbacks.store_result(flow.store.r, job_id, "reveal_email", {
        "trackingId": "trk_1", "status": "completed", "email": "dana@acme.example", "emailStatus": "catch_all",
        "creditsUsed": 3})
    assert flow.advance(job_id) == State.WRITING
    assert [args[:2] for args in flow.clodura.args("verify_email")] == [("dana@acme.example", True)]
    assert flow.queued_writes()[0]["changes"]["Email_Verification_Detail__c"] == "clodura deep: Deliverable"


def test_a_reveal_that_finds_nothing_still_writes_what_the_enrichment_found(flow):
    flow.contact(Email=None)
    job_id = flow.started(flow.new_job("Contact", CONTACT_ID))
    flow.advance(job_id)
    callbacks.store_result(flow.store.r, job_id, "reveal_email",
                           {"trackingId": "trk_1", "status": "not_found", "email": None, "creditsUsed": 0})
    assert flow.advance(job_id) == State.WRITING
    assert flow.clodura.count("verify_email") == 0
    changes = flow.queued_writes()[0]["changes"]
    assert "Email" not in changes and "Email_Verification_Status__c" not in changes
    assert changes["Clodura_Person_Id__c"] == "p_dana"


def test_a_202_verdict_parks_the_job_until_it_comes(flow):
    flow.clodura.verify_later = True
    flow.contact()
    job_id = flow.started(flow.new_job("Contact", CONTACT_ID))
    assert flow.advance(job_id) == State.AWAITING_VERIFICATION
    doc_id = flow.memory(job_id)["pending:verify"]["id"]
    assert flow.advance(job_id) == State.AWAITING_VERIFICATION
    assert flow.clodura.count("verify_email") == 1

    callbacks.store_result(flow.store.r, job_id, "verify", {"docId": doc_id, "status": "Completed",
                                                            "result": "Undeliverable", "verifiedAt": VERIFIED_AT})
    assert flow.advance(job_id) == State.WRITING
    assert flow.queued_writes()[0]["changes"]["Email_Verification_Status__c"] == "invalid"
    assert flow.clodura.count("verify_email") == 1


def test_nobody_at_clodura_and_no_email_is_skipped_without_spending(flow):
    flow.clodura.person = None
    flow.contact(Email=None)
    job_id = flow.started(flow.new_job("Contact", CONTACT_ID))
    assert flow.advance(job_id) == State.SKIPPED
    assert flow.job(job_id).last_error == "no match at Clodura and no email to verify"
    assert flow.clodura.count("reveal_email") == 0          # nothing to reveal by
    assert flow.spent() == 0
    assert flow.queued_writes() == []


def test_a_lead_uses_its_company_field_and_its_own_map(flow):
    flow.record("Lead", LEAD_ID, FirstName="Dana", LastName="Rivers", Email=EMAIL, Company="Acme Inc",
                Website=None, Industry=None)
    job_id = flow.started(flow.new_job("Lead", LEAD_ID))
    assert flow.advance(job_id) == State.WRITING
    assert flow.clodura.args("enrich_contact")[0][0]["organisationName"] == "Acme Inc"
    changes = flow.queued_writes()[0]["changes"]
    assert changes["Industry"] == "Computer Software" and changes["Website"] == "https://acme.example"
    assert "Department" not in changes                      # not in the Lead map


def test_the_contacts_of_one_account_queue_one_account_job(flow):
    flow.contact(AccountId=ACCOUNT_ID)
    flow.contact("0035g00000SecondAAB", FirstName="Sam", Email="sam@acme.example", AccountId=ACCOUNT_ID)
    first = flow.started(flow.new_job("Contact", CONTACT_ID))
    second = flow.started(flow.new_job("Contact", "0035g00000SecondAAB"))
    flow.salesforce.fail("describe", salesforce_busy())   # after the Account's job
    with pytest.raises(SalesforceFailure):
        flow.advance(first)
    assert flow.advance(first) == State.WRITING      # the replay of the first contact's run
    assert flow.advance(second) == State.WRITING

    account_jobs = [job for job in map(flow.job, flow.store.ids_in_state(State.RECEIVED)) if job.object == "Account"]
    assert [(job.record_id, job.input) for job in account_jobs] == [(ACCOUNT_ID, {"for_contact_job": first})]
    (account_job,) = account_jobs
    assert flow.tasks.resumed.count(account_job.id) == 1
    assert flow.memory(account_job.id)[HINT] == {
        "organisation": {"organisationId": "o_acme", "organisationName": "Acme Inc", "domain": "acme.example"},
        "email_domain": "acme.example"}
