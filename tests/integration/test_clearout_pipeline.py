"""Clearout in the pipeline (VERIFY_PROVIDER=clodura_then_clearout,
CLEAROUT_FINDER=true on the provider stack): a second opinion on what
Clodura calls risky or catch-all, with its 524 retried, and its finder for
people Clodura cannot reveal, queued searches included."""
from __future__ import annotations

from crm_enrich.sandbox.clodura import deep_verdict
from crm_enrich.sandbox.dataset import build_dataset
from tests.integration.conftest import final_job
from tests.integration.helpers import create_contact, people, states

DATASET = build_dataset()
COMPANIES = {c.organisation_id: c for c in DATASET.companies}


def catch_all_people_deep_cannot_resolve(count: int, skip: int):
    chosen = [(p, c) for p, c in people("catch_all", 40) if deep_verdict(p.email, 0.3) != "Deliverable"]
    return chosen[skip:skip + count]


def unknown_people(count: int, skip: int):
    """People Clodura has never heard of (Clearout knows everyone), at
    ordinary companies, whose address is deliverable."""
    chosen = [(p, COMPANIES[p.organisation_id]) for p in DATASET.people
              if not p.known and p.email_verdict == "Deliverable" and not COMPANIES[p.organisation_id].catch_all]
    return chosen[skip:skip + count]


def clearout_calls(control, path: str) -> int:
    return control.clearout_usage()["calls"].get(path, 0)


def test_catch_all_gets_clearouts_second_opinion_and_a_524_is_retried(pcontrol, pstore):
    (person, company), (other, other_company) = catch_all_people_deep_cannot_resolve(2, skip=0)
    timeouts = pcontrol.clearout_usage()["timeouts_524"]
    verifies = clearout_calls(pcontrol, "email_verify/instant")
    pcontrol.clearout_slow(times=1, kind="verify")  # the first answer is a 524

    contact_id = create_contact(pcontrol, person, company, with_email=True)
    job = final_job(pstore, "Contact", contact_id)
    assert job.state == "done", job.last_error
    record = pcontrol.record("Contact", contact_id)["record"]
    assert record["Email_Verification_Status__c"] == "catch_all"
    detail = record["Email_Verification_Detail__c"]
    assert detail.startswith("clodura deep: Risky (Catch-all); then clearout: catch_all"), detail
    assert pcontrol.clearout_usage()["timeouts_524"] == timeouts + 1
    assert clearout_calls(pcontrol, "email_verify/instant") == verifies + 2  # the 524, then the verdict


def test_a_valid_address_is_not_sent_to_clearout(pcontrol, pstore):
    ((person, company),) = people("deliverable", 1, skip=20)
    verifies = clearout_calls(pcontrol, "email_verify/instant")
    contact_id = create_contact(pcontrol, person, company, with_email=True)
    assert final_job(pstore, "Contact", contact_id).state == "done"
    assert pcontrol.record("Contact", contact_id)["record"]["Email_Verification_Status__c"] == "valid"
    assert clearout_calls(pcontrol, "email_verify/instant") == verifies


def test_clearout_finds_the_email_clodura_cannot_reveal(pcontrol, pstore):
    (person, company), = unknown_people(1, skip=0)
    contact_id = create_contact(pcontrol, person, company, with_email=False)
    job = final_job(pstore, "Contact", contact_id)
    assert job.state == "done", job.last_error
    record = pcontrol.record("Contact", contact_id)["record"]
    assert record["Email"] == person.email
    assert record["Email_Verification_Status__c"] == "valid"


def test_a_queued_clearout_search_is_collected_later(pcontrol, pstore):
    (person, company), = unknown_people(1, skip=1)
    status_calls = clearout_calls(pcontrol, "email_finder/instant/queue_status")
    pcontrol.clearout_slow(times=1, kind="finder")  # the search outlasts its timeout: queued

    contact_id = create_contact(pcontrol, person, company, with_email=False)
    job = final_job(pstore, "Contact", contact_id)
    assert job.state == "done", job.last_error
    assert "awaiting_email" in states(job)
    assert pcontrol.record("Contact", contact_id)["record"]["Email"] == person.email
    assert clearout_calls(pcontrol, "email_finder/instant/queue_status") > status_calls
