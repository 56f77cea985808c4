"""A domain for a company name: a Lead with a Company and no Website, and an
Account without a Website, through their jobs with a fake autocomplete
(Clearout's answer shape), and the Lead's company's pure helpers."""
from __future__ import annotations

from crm_enrich.flow import callbacks
from crm_enrich.flow.lead_company import company_sources, with_company_domain
from crm_enrich.jobs.state import State
from tests.unit.flow.harness import ACCOUNT_ID, LEAD_ID
from tests.unit.flow.test_account_job import ACME, ACME_ENRICHED, account

ACME_SUGGESTED = {"name": "Acme Inc", "domain": "acme.example", "confidence": 93}


class FakeAutocomplete:
    def __init__(self, suggestions: list[dict], refused: str | None = None):
        self.answer = {"suggestions": suggestions, "refused": refused}
        self.asked: list[str] = []

    def suggestions(self, query: str) -> dict:
        self.asked.append(query)
        return self.answer


def lead(flow, suggestions: list[dict], **fields) -> FakeAutocomplete:
    flow.svc.company_autocomplete = autocomplete = FakeAutocomplete(suggestions)
    flow.clodura.person = None                                 # Clodura does not place the person
    flow.clodura.organisations, flow.clodura.organisation = [ACME], ACME_ENRICHED
    flow.record("Lead", LEAD_ID, **{"FirstName": "Dana", "LastName": "Rivers", "Email": None,
                                    "Company": "  ACME,   Inc. ", "Website": None, "Industry": None,
                                    "NumberOfEmployees": None, **fields})
    return autocomplete


def test_a_leads_found_domain_feeds_the_reveal_and_the_organisation_and_fills_website(flow):
    autocomplete = lead(flow, [ACME_SUGGESTED])
    job_id = flow.started(flow.new_job("Lead", LEAD_ID))
    assert flow.advance(job_id) == State.AWAITING_EMAIL
    assert autocomplete.asked == ["ACME, Inc."]
    assert flow.clodura.args("search_organisations") == [({"domain": "acme.example"},)]
    assert flow.clodura.args("reveal_email")[0][0] == {"firstName": "Dana", "lastName": "Rivers",
                                                       "companyDomain": "acme.example"}
    callbacks.store_result(flow.store.r, job_id, "reveal_email", {"trackingId": "trk_1", "status": "completed",
                                                                   "email": "dana@acme.example", "creditsUsed": 1})
    flow.svc.company_autocomplete = None          # the resumed job asks nothing again
    assert flow.advance(job_id) == State.WRITING
    assert (flow.clodura.count("search_organisations"), flow.clodura.count("enrich_organisation")) == (1, 1)
    assert len(autocomplete.asked) == 1
    changes = flow.queued_writes()[0]["changes"]
    assert (changes["Email"], changes["Website"], changes["NumberOfEmployees"]) == (
        "dana@acme.example", "https://acme.example", 312)


def test_a_lead_without_an_email_to_find_still_gets_its_company(make_flow):
    flow = make_flow()
    lead(flow, [ACME_SUGGESTED], FirstName=None, Email="dana@gmail.com")
    job_id = flow.started(flow.new_job("Lead", LEAD_ID))
    assert flow.advance(job_id) == State.WRITING
    changes = flow.queued_writes()[0]["changes"]
    assert changes["Website"] == "https://acme.example" and changes["NumberOfEmployees"] == 312
    assert changes["Industry"] == "Computer Software"
    assert flow.memory(job_id)["outcome"]["company_domain_found"] is True


def test_a_weak_suggestion_is_not_used(flow):
    autocomplete = lead(flow, [{"name": "Acme Staffing", "domain": "acme-staffing.example", "confidence": 79}],
                        Email="dana@gmail.com")
    job_id = flow.started(flow.new_job("Lead", LEAD_ID))
    assert flow.advance(job_id) == State.WRITING       # the verdict is still written
    assert autocomplete.asked == ["ACME, Inc."]
    assert flow.clodura.count("search_organisations") == 0 and flow.clodura.count("enrich_organisation") == 0
    changes = flow.queued_writes()[0]["changes"]
    assert "Website" not in changes and "NumberOfEmployees" not in changes


def test_a_lead_the_person_match_places_asks_no_autocomplete(flow):
    autocomplete = lead(flow, [ACME_SUGGESTED])
    flow.clodura.person = {"personId": "p_1", "organisation": {"organisationId": "o_acme", "domain": "acme.example"}}
    job_id = flow.started(flow.new_job("Lead", LEAD_ID))
    flow.advance(job_id)
    assert autocomplete.asked == [] and flow.clodura.count("search_organisations") == 0


def test_an_account_without_a_website_is_found_by_the_domain_of_its_name(flow):
    flow.svc.company_autocomplete = autocomplete = FakeAutocomplete([ACME_SUGGESTED])
    account(flow, Website=None, Name="ACME")     # Clodura's own name for it differs
    flow.clodura.organisations, flow.clodura.organisation = [ACME], ACME_ENRICHED
    job_id = flow.started(flow.new_job("Account", ACCOUNT_ID))
    assert flow.advance(job_id) == State.WRITING
    assert autocomplete.asked == ["ACME"]
    assert flow.clodura.args("search_organisations") == [({"domain": "acme.example"},)]
    assert flow.queued_writes()[0]["changes"]["Website"] == "https://acme.example"


def test_an_account_clodura_does_not_know_still_gets_a_confident_website(flow):
    flow.svc.company_autocomplete = FakeAutocomplete([ACME_SUGGESTED])
    account(flow, Website=None, Name="ACME")
    flow.clodura.organisations = []
    job_id = flow.started(flow.new_job("Account", ACCOUNT_ID))
    assert flow.advance(job_id) == State.WRITING
    (write,) = flow.queued_writes()
    assert write["changes"] == {"Website": "https://acme.example"}
    assert flow.clodura.count("enrich_organisation") == 0


def test_a_refusal_for_the_day_is_not_cached(flow):
    flow.svc.company_autocomplete = autocomplete = FakeAutocomplete([], refused="daily limit reached")
    account(flow, Website=None, Name="ACME")
    flow.clodura.organisations = []
    job_id = flow.started(flow.new_job("Account", ACCOUNT_ID))
    assert flow.advance(job_id) == State.SKIPPED
    assert not flow.store.r.keys("cache:company_domain:*")
    assert autocomplete.asked == ["ACME"]


def test_the_reveal_sees_the_found_domain_and_the_write_the_record_as_it_is():
    record = {"Website": None, "Company": "Acme"}
    assert with_company_domain(record, {"domain": "acme.example"})["Website"] == "acme.example"
    assert record["Website"] is None
    assert with_company_domain({"Website": "https://own.example"}, {"domain": "acme.example"})["Website"] == \
        "https://own.example"
    assert company_sources({"domain": "acme.example", "found_by": "clearout", "organisation": None}, "now") == (
        {"organisation.website": "https://acme.example"}, {"organisation.website": "clearout"})
    sources, providers = company_sources({"domain": "acme.example", "found_by": "clearout",
                                          "organisation": ACME_ENRICHED}, "now")
    assert sources["organisation.employee_count"] == 312 and providers == {}   # Clodura's website wins
    assert "meta.enriched_at" not in sources
