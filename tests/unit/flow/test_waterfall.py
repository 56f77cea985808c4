"""The waterfall's agreement rule (pure), the requests it builds, its
settings, the email type read from a verdict's flags, and the dry run's
price of the steps that are on."""
from __future__ import annotations

import pytest

from crm_enrich.flow import waterfall
from crm_enrich.flow.waterfall import (
    AGREES,
    NOT_FOUND,
    WEAK,
    agreement,
    clearout_person,
    providers_of,
    same_name,
    search_filters,
)
from crm_enrich.operations.estimate import price_selection
from crm_enrich.providers.clearout import email_type_of
from crm_enrich.settings import SettingsError, parse_waterfall_steps
from tests.unit.flow.harness import CONTACT_ID, build_flow

RECORD = {"FirstName": "Sam", "LastName": "Okafor", "Email": "sam.okafor@riverbend.test",
          "Account.Name": "Riverbend Analytics"}


def candidate(**overrides) -> dict:
    return {"type": "person", "name": "Sam Okafor", "domain": "riverbend.test", "company": "Riverbend Analytics",
            **overrides}


def test_same_person_at_the_record_s_email_domain_agrees():
    assert agreement(RECORD, candidate()) == AGREES
    # Case, accents and punctuation do not matter; first and last may come apart.
    record = {**RECORD, "FirstName": "José", "LastName": "O'Brien-Lee"}
    assert agreement(record, {"type": "person", "first": "jose", "last": "OBrien Lee",
                              "domain": "RIVERBEND.test"}) == AGREES


def test_another_name_or_another_domain_is_a_weak_match():
    assert agreement(RECORD, candidate(name="Sam Okoro")) == WEAK
    assert agreement(RECORD, candidate(name="Samuel Okafor")) == WEAK
    # The same name at another company: the record's email says where they work.
    assert agreement(RECORD, candidate(domain="elsewhere.test", company="Riverbend Analytics")) == WEAK
    assert agreement(RECORD, candidate(domain=None)) == WEAK


def test_a_role_address_or_nothing_found_is_never_a_match():
    assert agreement(RECORD, candidate(type="role", name=None)) == WEAK
    assert agreement(RECORD, None) == NOT_FOUND


def test_without_a_business_domain_the_website_then_the_company_name_decides():
    webmail = {**RECORD, "Email": "sam@gmail.com"}
    # A free address says nothing about the company: the name decides.
    assert agreement(webmail, candidate(domain="riverbend.test", company="Riverbend Analytics Inc.")) == AGREES
    assert agreement(webmail, candidate(domain="riverbend.test", company="Riverstone Capital")) == WEAK
    # A Lead's website (or a Contact's Account's) is a domain to agree with.
    lead = {"FirstName": "Sam", "LastName": "Okafor", "Website": "https://www.riverbend.test/about",
            "Company": "Riverbend"}
    assert agreement(lead, candidate(company="Something Else")) == AGREES
    assert agreement(lead, candidate(domain="eu.riverbend.test")) == AGREES  # a subdomain of it
    assert agreement({"FirstName": "Sam", "LastName": "Okafor"}, candidate()) == WEAK  # nothing to compare


def test_a_record_with_a_last_name_only_needs_it_to_end_the_name():
    assert same_name({"LastName": "Okafor"}, None, None, "Sam Okafor")
    assert not same_name({"LastName": "Okafor"}, None, None, "Okafor Sam")
    assert not same_name({"FirstName": "Sam"}, "Sam", "Okafor")   # no last name: nothing to hold to


def test_people_search_asks_by_name_and_the_company_domain_else_its_name():
    assert search_filters(RECORD) == {"firstName": "Sam", "lastName": "Okafor", "companyDomain": ["riverbend.test"]}
    no_domain = {**RECORD, "Email": None}
    assert search_filters(no_domain) == {"firstName": "Sam", "lastName": "Okafor",
                                         "organisationName": ["Riverbend Analytics"]}
    assert search_filters({**no_domain, "Account.Name": None}) is None
    assert search_filters({**RECORD, "FirstName": " "}) is None


def test_a_clearout_match_has_no_clodura_id_and_is_credited_to_clearout():
    person = clearout_person({"title": "Head of Data", "linkedin_url": "https://www.linkedin.com/in/sam",
                              "company_name": "Riverbend", "company_domain": "Riverbend.test"})
    assert person["personId"] is None and person["personTitle"] == "Head of Data"
    assert person["organisation"]["domain"] == "riverbend.test"
    assert providers_of(person)["person.title"] == "clearout"
    assert providers_of({"source": "clodura"}) == {}


def test_waterfall_steps_setting():
    assert parse_waterfall_steps("clodura_search, clearout_email") == ("clodura_search", "clearout_email")
    assert parse_waterfall_steps("none") == ()
    with pytest.raises(ValueError, match="unknown step"):
        parse_waterfall_steps("clearout_email,hunter")


def test_a_clearout_step_needs_a_clearout_token(redis_client):
    with pytest.raises(SettingsError, match="CLEAROUT_API_TOKEN"):
        build_flow(redis_client, waterfall_steps="clearout_email", clearout_api_token=None)
    build_flow(redis_client, waterfall_steps="clodura_search", clearout_api_token=None)  # Clodura's own


def test_email_type_from_a_verdict_s_flags_worst_first():
    assert email_type_of({"disposable": "no", "role": "no", "free": "no"}) == "business"
    assert email_type_of({"disposable": "no", "role": "yes", "free": "yes"}) == "role"
    assert email_type_of({"disposable": "yes", "role": "yes", "free": "no"}) == "disposable"
    assert email_type_of({"disposable": "no", "role": "no", "free": "yes"}) == "free"
    assert email_type_of({}) is None   # no flags: unknown, never guessed as business


CLEAROUT = {"clearout_api_token": "t"}


def test_the_dry_run_prices_the_steps_that_are_on(redis_client):
    contact = {"FirstName": "Sam", "LastName": "Okafor", "Email": "sam@riverbend.test",
               "Account.Name": "Riverbend"}
    off = price_selection(build_flow(redis_client).svc, "Contact", "rerun", False, 1, [contact])
    every_step = build_flow(redis_client, waterfall_steps="clearout_email,clearout_linkedin,clodura_search",
                            **CLEAROUT)
    on = price_selection(every_step.svc, "Contact", "rerun", False, 1, [contact])
    # No LinkedIn URL: the profile lookup cannot be asked.
    assert set(on["needs"]) - set(off["needs"]) == {"clearout_reverse_email", "people_search"}
    assert on["needs"]["people_search"] == {"records": 1, "atLeast": 0.0, "atMost": 1.0}
    assert on["credits"]["atLeast"] == off["credits"]["atLeast"]
    assert on["credits"]["atMost"] == pytest.approx(off["credits"]["atMost"] + 1.0)
    assert (off["clearoutCredits"], on["clearoutCredits"]) == ({"atLeast": 0, "atMost": 0},
                                                               {"atLeast": 0, "atMost": 4.0})
    # A record not read is priced at the worst case, waterfall included.
    unread = price_selection(build_flow(redis_client, waterfall_steps="clearout_email,clodura_search", **CLEAROUT).svc,
                             "Contact", "rerun", False, 1, [], looked_up=0)
    assert unread["needs"]["clearout_not_read"]["atMost"] == 4.0


def test_a_replayed_job_asks_each_step_once(redis_client, monkeypatch):
    # The response cache is off: only the job's memory keeps a replay from paying again.
    flow = build_flow(redis_client, cache_ttl_s=0, waterfall_steps="clearout_email,clodura_search", **CLEAROUT)
    asked: list[str] = []

    def lookup(client, email):   # the edge: what Clearout would answer
        asked.append(email)
        return {"lead": {"type": "person", "name": "Someone Else", "title": "CTO", "linkedin_url": None,
                         "company_name": "Riverbend", "company_domain": "riverbend.test"}, "credits": 4}

    def search(client, filters):
        asked.append("search")
        return {"people": [], "credits": 0}

    monkeypatch.setattr(waterfall, "reverse_lookup_email", lookup)
    monkeypatch.setattr(waterfall, "search_people", search)
    job_id = flow.new_job("Contact", CONTACT_ID)
    for _replay in range(2):
        job = flow.store.get(job_id)
        assert waterfall.found_person(flow.svc, job, flow.store.memory(job), RECORD, "task-1", None) is None
    assert asked == [RECORD["Email"], "search"]
    job = flow.store.get(job_id)
    assert [(s["step"], s["outcome"]) for s in job.steps if "step" in s] == [("clearout_email", "weak"),
                                                                           ("clodura_search", "not_found")]
    assert float(redis_client.hget(flow.store.job_key(job_id), "clearout_credits")) == 4
