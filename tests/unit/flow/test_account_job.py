"""An Account's own job through advance_account: which company, and that the
wrong company's firmographics are never bought or written. (The pure
matching logic is in test_account.py.)"""
from __future__ import annotations

import pytest

from crm_enrich.flow.record import account_fields
from crm_enrich.jobs.state import State
from crm_enrich.salesforce.gateway import SalesforceFailure
from tests.unit.flow.fakes import PERSON, salesforce_busy
from tests.unit.flow.harness import ACCOUNT_ID, CONTACT_ID

NORTHWIND = {"organisationId": "o_nw", "organisationName": "Northwind Example Inc", "domain": "northwind.example"}
ACME = {"organisationId": "o_acme", "organisationName": "Acme Inc", "domain": "acme.example"}
# /organisation/enrich's answer for Acme (docs/clodura.md#organisation-enrich), technographics asked for.
ACME_ENRICHED = {**ACME, "industry": "Computer Software", "employeeCount": 312, "revenue": "11M-100M",
                 "financials": {"totalFunding": "45M"}, "technographics": {"technologies": ["Salesforce", "AWS"]}}


def account(flow, **fields):
    return flow.record("Account", ACCOUNT_ID, **{"Name": "Acme Inc", "Website": "https://www.acme.example",
                                                 "Industry": None, **fields})


def account_job_of_contact(flow, person_org: dict | None, email: str) -> str:
    """Run a Contact of the Account to writing; answer the Account job it queued."""
    flow.clodura.person = {**PERSON, "organisation": person_org} if person_org else None
    flow.contact(AccountId=ACCOUNT_ID, Email=email)
    contact_job = flow.started(flow.new_job("Contact", CONTACT_ID))
    assert flow.advance(contact_job) == State.WRITING
    (account_job,) = [job_id for job_id in flow.store.ids_in_state(State.RECEIVED)
                      if flow.job(job_id).object == "Account"]
    flow.clodura.calls.clear()
    return account_job


def test_an_account_nothing_at_clodura_agrees_with_is_skipped_without_buying_anything(flow):
    account(flow)
    flow.clodura.organisations = [{"organisationId": "o_globex", "organisationName": "Globex",
                                   "domain": "globex.example"}]
    job_id = flow.started(flow.new_job("Account", ACCOUNT_ID))
    assert flow.advance(job_id) == State.SKIPPED
    assert flow.job(job_id).last_error == "no company at Clodura matches this Account"
    assert flow.clodura.args("search_organisations") == [({"domain": "acme.example"},)]
    assert flow.clodura.count("enrich_organisation") == 0
    assert flow.spent() == 0
    assert flow.queued_writes() == []


def test_a_contact_who_moved_on_does_not_bring_their_new_employer_onto_the_account(flow):
    account(flow)
    flow.clodura.organisations = [NORTHWIND]          # the search does not agree either
    job_id = account_job_of_contact(flow, NORTHWIND, "dana@northwind.example")
    contact_spent = flow.spent()
    flow.started(job_id)
    assert flow.advance(job_id) == State.SKIPPED
    assert flow.clodura.args("search_organisations") == [({"domain": "acme.example"},)]   # the Website wins
    assert flow.clodura.count("enrich_organisation") == 0
    assert flow.spent() == contact_spent


def test_the_persons_organisation_that_agrees_is_enriched_without_a_search(flow):
    account(flow)
    flow.clodura.organisation = ACME_ENRICHED
    job_id = account_job_of_contact(flow, ACME, "dana@acme.example")
    contact_spent = flow.spent()
    flow.started(job_id)
    assert flow.advance(job_id) == State.WRITING
    assert flow.clodura.count("search_organisations") == 0
    assert flow.clodura.args("enrich_organisation") == [({
        "organisationId": "o_acme", "includeTechnographics": True, "includeFunding": False,
        "includeAcquisitions": False},)]
    assert flow.spent() - contact_spent == 2          # base firmographics + technographics
    (write,) = [item for item in flow.queued_writes() if item["object"] == "Account"]
    assert (write["job_id"], write["record_id"]) == (job_id, ACCOUNT_ID)
    changes = dict(write["changes"])
    changes.pop("Enriched_At__c")
    assert changes == {"Industry": "Computer Software", "NumberOfEmployees": 312, "Revenue_Band__c": "11M-100M",
                       "Technologies__c": "Salesforce; AWS", "Total_Funding__c": 45_000_000.0,
                       "Clodura_Organisation_Id__c": "o_acme"}   # Website: not blank, kept


def test_a_search_match_that_agrees_is_enriched(flow):
    account(flow, Website=None)
    flow.clodura.organisations = [NORTHWIND, ACME]
    flow.clodura.organisation = ACME_ENRICHED
    job_id = flow.started(flow.new_job("Account", ACCOUNT_ID))
    assert flow.advance(job_id) == State.WRITING
    assert flow.clodura.args("search_organisations") == [({"organisationName": "Acme Inc"},)]
    assert flow.clodura.args("enrich_organisation")[0][0]["organisationId"] == "o_acme"
    assert flow.queued_writes()[0]["changes"]["Website"] == "https://acme.example"


def test_an_organisation_clodura_no_longer_knows_is_skipped(flow):
    account(flow)
    flow.clodura.organisations = [ACME]
    flow.clodura.organisation = None
    job_id = flow.started(flow.new_job("Account", ACCOUNT_ID))
    assert flow.advance(job_id) == State.SKIPPED
    assert flow.job(job_id).last_error == "Clodura does not know the organisation any more"


def test_a_replayed_account_job_pays_for_the_organisation_once(make_flow):
    flow = make_flow(cache_ttl_s=0)
    account(flow)
    flow.clodura.organisations = [ACME]
    flow.clodura.organisation = ACME_ENRICHED
    job_id = flow.started(flow.new_job("Account", ACCOUNT_ID))
    flow.salesforce.fail("describe", salesforce_busy())
    with pytest.raises(SalesforceFailure):
        flow.advance(job_id)
    assert flow.advance(job_id) == State.WRITING
    assert (flow.clodura.count("search_organisations"), flow.clodura.count("enrich_organisation")) == (1, 1)
    assert flow.spent() == 2


def test_an_account_read_with_its_contact_is_enriched_without_a_read_of_its_own(flow):
    """The Contact's query brought the Account's fields (relationship
    fields): its job starts from them, and writes what a read would allow."""
    acct = account(flow)
    flow.clodura.person = {**PERSON, "organisation": ACME}
    flow.clodura.organisation = ACME_ENRICHED
    flow.contact(AccountId=ACCOUNT_ID, **{f"Account.{name}": acct.get(name) for name in account_fields(flow.svc)})
    contact_job = flow.started(flow.new_job("Contact", CONTACT_ID))
    assert flow.advance(contact_job) == State.WRITING
    (account_job,) = [job_id for job_id in flow.store.ids_in_state(State.RECEIVED)
                      if flow.job(job_id).object == "Account"]
    reads_before = flow.salesforce.count("read_records")
    assert flow.advance(account_job) == State.WRITING          # no parking for a read
    assert flow.salesforce.count("read_records") == reads_before
    (write,) = [item for item in flow.queued_writes() if item["object"] == "Account"]
    assert write["changes"]["Industry"] == "Computer Software" and "Website" not in write["changes"]

