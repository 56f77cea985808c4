"""The waterfall for people Clodura does not match, and the email type, on
the real stack: the provider stack has every step on and Email_Type__c
mapped with Clearout's attribute checks allowed; the main stack has the
waterfall off."""
from __future__ import annotations

import requests

from crm_enrich.dev.devstack import wait_for
from crm_enrich.sandbox.dataset import build_dataset
from tests.integration.conftest import final_job

DATASET = build_dataset()
COMPANIES = {c.organisation_id: c for c in DATASET.companies}
CHECKS = "email/verify/<attribute>"


def strangers(count: int, skip: int):
    """People Clodura has never heard of, with a deliverable address at an
    ordinary company, from the end of the dataset (other tests take the first)."""
    chosen = [(p, COMPANIES[p.organisation_id]) for p in reversed(DATASET.people)
              if not p.known and p.email_verdict == "Deliverable" and not COMPANIES[p.organisation_id].catch_all]
    return chosen[skip:skip + count]


def calls(control, endpoint: str) -> int:
    return control.clearout_usage()["calls"].get(endpoint, 0)


def create(control, company_name: str, **fields) -> str:
    (account_id,) = control.create_records("Account", [{"Name": company_name}], fire_outbound=False)
    (contact_id,) = control.create_records("Contact", [{**fields, "AccountId": account_id}])
    return contact_id


def admin(stack, path: str, method: str = "GET", **kw) -> dict:
    resp = requests.request(method, stack.web_url + path, timeout=30,
                            headers={"Authorization": f"Bearer {stack.admin_token}"}, **kw)
    resp.raise_for_status()
    return resp.json()


def waterfall_steps(stack, job_id: str) -> list[tuple[str, str]]:
    return [(s["step"], s["outcome"]) for s in admin(stack, f"/admin/jobs/{job_id}")["steps"] if "step" in s]


def test_a_contact_unknown_to_clodura_gets_title_and_linkedin_from_clearout(provider_stack, pcontrol, pstore):
    ((person, company),) = strangers(1, skip=0)
    lookups, checks = calls(pcontrol, "reverse_lookup/email"), calls(pcontrol, CHECKS)
    contact_id = create(pcontrol, company.name, FirstName=person.first_name, LastName=person.last_name,
                        Email=person.email)

    job = final_job(pstore, "Contact", contact_id)
    assert job.state == "done", job.last_error
    record = pcontrol.record("Contact", contact_id)["record"]
    assert (record["Title"], record["LinkedIn_URL__c"]) == (person.title, person.linkedin_url)
    assert not record.get("Clodura_Person_Id__c")   # Clearout's lead id is not Clodura's
    # Clodura's verdict carries no flags: Clearout's checks (disposable, role, free: all "no").
    assert record["Email_Type__c"] == "business"
    assert calls(pcontrol, "reverse_lookup/email") == lookups + 1
    assert calls(pcontrol, CHECKS) == checks + 3
    # The first source that agrees ends the waterfall; the others are not asked.
    assert waterfall_steps(provider_stack, job.id) == [("clearout_email", "agrees"),
                                                       ("email_type_checks", "business")]
    assert float(pstore.r.hget(pstore.job_key(job.id), "clearout_credits")) == 4 + 3
    changes = {c["field"]: c for c in admin(provider_stack, f"/admin/records/Contact/{contact_id}")["changes"]}
    assert changes["Title"]["provider"] == changes["LinkedIn_URL__c"]["provider"] == "clearout"
    assert changes["Email_Type__c"]["provider"] == "clearout"


def test_a_weak_match_is_never_written(provider_stack, pcontrol, pstore):
    (someone, company), (other, other_company) = strangers(2, skip=1)
    # Another person's address: Clearout names someone else.
    wrong_name = create(pcontrol, company.name, FirstName="Quentin", LastName="Zzyzx", Email=someone.email)
    # The person's own profile, but an address at another company: the profile's company disagrees.
    elsewhere = f"{other.first_name}.{other.last_name}@{company.domain}".lower()
    wrong_domain = create(pcontrol, company.name, FirstName=other.first_name, LastName=other.last_name,
                          Email=elsewhere, LinkedIn_URL__c=other.linkedin_url)
    assert other_company.domain != company.domain

    first, second = final_job(pstore, "Contact", wrong_name), final_job(pstore, "Contact", wrong_domain)
    for job, record_id in ((first, wrong_name), (second, wrong_domain)):
        assert job.state == "done", job.last_error
        record = pcontrol.record("Contact", record_id)["record"]
        assert not record.get("Title") and not record.get("Clodura_Person_Id__c")
    assert pcontrol.record("Contact", wrong_domain)["record"]["LinkedIn_URL__c"] == other.linkedin_url  # as given
    assert waterfall_steps(provider_stack, first.id)[:2] == [("clearout_email", "weak"),
                                                             ("clodura_search", "not_found")]
    assert waterfall_steps(provider_stack, second.id)[:3] == [
        ("clearout_email", "not_found"), ("clearout_linkedin", "weak"), ("clodura_search", "not_found")]


def test_people_search_finds_whom_enrich_did_not(provider_stack, pcontrol, pstore):
    # A known person under an Account named without the legal form ("Acme" for
    # "Acme Inc"): enrich matches names with the exact company name only.
    person, company = next((p, COMPANIES[p.organisation_id]) for p in reversed(DATASET.people)
                           if p.known and p.email_verdict == "Deliverable"
                           and not COMPANIES[p.organisation_id].catch_all
                           and COMPANIES[p.organisation_id].name.split()[-1] in ("Inc", "LLC", "Corp"))
    short_name = company.name.rsplit(" ", 1)[0]
    spent = pcontrol.clodura_usage()["calls"].get("search/people", 0)
    contact_id = create(pcontrol, short_name, FirstName=person.first_name, LastName=person.last_name)

    job = final_job(pstore, "Contact", contact_id)
    assert job.state == "done", job.last_error
    record = pcontrol.record("Contact", contact_id)["record"]
    assert (record["Title"], record["Clodura_Person_Id__c"]) == (person.title, person.person_id)
    assert record["Email"] == person.email   # revealed by the id the search gave
    assert ("clodura_search", "agrees") in waterfall_steps(provider_stack, job.id)
    assert pcontrol.clodura_usage()["calls"].get("search/people", 0) == spent + 1


def test_a_rerun_the_same_day_pays_nothing_twice(provider_stack, pcontrol, pstore):
    ((person, company),) = strangers(1, skip=3)
    contact_id = create(pcontrol, company.name, FirstName=person.first_name, LastName=person.last_name,
                        Email=person.email)
    first = final_job(pstore, "Contact", contact_id)
    assert first.state == "done", first.last_error
    lookups, checks = calls(pcontrol, "reverse_lookup/email"), calls(pcontrol, CHECKS)
    spent = pcontrol.clearout_usage()["credits_spent"]

    admin(provider_stack, "/admin/rerun", "POST", json={"object": "Contact", "ids": [contact_id]})
    second = wait_for(lambda: (job := final_job(pstore, "Contact", contact_id)).id != first.id and job, 60,
                      "the re-run's job")
    assert second.state == "done", second.last_error
    assert ("clearout_email", "agrees") in waterfall_steps(provider_stack, second.id)   # from the cache
    assert (calls(pcontrol, "reverse_lookup/email"), calls(pcontrol, CHECKS)) == (lookups, checks)
    assert pcontrol.clearout_usage()["credits_spent"] == spent
    assert pstore.r.hget(pstore.job_key(second.id), "clearout_credits") is None


def test_with_the_waterfall_off_clearout_is_not_asked(stack, control, store):
    ((person, company),) = strangers(1, skip=4)
    lookups = calls(control, "reverse_lookup/email")
    contact_id = create(control, company.name, FirstName=person.first_name, LastName=person.last_name,
                        Email=person.email)
    job = final_job(store, "Contact", contact_id)
    assert job.state == "done", job.last_error
    assert not control.record("Contact", contact_id)["record"].get("Title")
    assert calls(control, "reverse_lookup/email") == lookups
    assert waterfall_steps(stack, job.id) == []
