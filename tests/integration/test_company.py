"""Company enrichment: Contacts' Accounts, and Accounts created directly, get
Clodura's firmographics, one Organisation Enrich per company a day."""
import requests

from crm_enrich.dev.devstack import wait_for
from crm_enrich.jobs.store import STATES
from crm_enrich.sandbox.dataset import build_dataset
from crm_enrich.sandbox.salesforce import ACCOUNT_INDUSTRIES

ORG_ENRICH = "/api/v1/organisation/enrich"
ORG_SEARCH = "/api/v1/organisation/search"


def companies_by_known_people():
    """Funded, not catch-all companies (their mail verifies at once), the
    ones with the most people Clodura knows first."""
    ds = build_dataset()
    known = {}
    for p in ds.people:
        if p.known:
            known.setdefault(p.organisation_id, []).append(p)
    companies = [ds.company(oid) for oid in sorted(known, key=lambda oid: -len(known[oid]))]
    return [(c, known[c.organisation_id]) for c in companies if c.total_funding and not c.catch_all]


def mark(control, service="clodura") -> int:
    return max([e["seq"] for e in control.log(service)] or [0])


def calls(control, path, since):
    return [e for e in control.log("clodura", since=since) if e["path"] == path]


def account_jobs(store, account_id):
    ids = set().union(*(store.ids_in_state(state) for state in STATES))
    return [j for j in map(store.get, ids) if j and j.object == "Account" and j.record_id == account_id]


def assert_firmographics(account: dict, company) -> None:
    # The org's Industry is a restricted picklist: a value it does not offer is left out.
    assert account["Industry"] == (company.industry if company.industry in ACCOUNT_INDUSTRIES else None)
    assert account["NumberOfEmployees"] == company.employee_count
    assert account["Revenue_Band__c"] == company.revenue
    assert account["Technologies__c"] == "; ".join(company.technologies)
    assert account["Total_Funding__c"] == float(company.total_funding.rstrip("M")) * 1e6
    assert account["Clodura_Organisation_Id__c"] == company.organisation_id
    assert account["Enriched_At__c"]
    assert not account.get("AnnualRevenue")  # a band is not a figure


def test_fifty_contacts_of_one_company_cause_one_organisation_enrich(control, store, job_for):
    company, people = companies_by_known_people()[0]
    since = mark(control)
    (account_id,) = control.create_records("Account", [{"Name": company.name}], fire_outbound=False)
    # The people Clodura knows; the rest unknown to it, with an address at
    # the company's domain.
    contacts = [{"FirstName": p.first_name, "LastName": p.last_name, "Email": p.email, "AccountId": account_id}
                for p in people]
    contacts += [{"FirstName": "Temp", "LastName": f"Worker{i}", "Email": f"temp.worker{i}@{company.domain}",
                  "AccountId": account_id} for i in range(50 - len(contacts))]
    contact_ids = control.create_records("Contact", contacts)
    assert len(contact_ids) == 50

    for rid in contact_ids:
        assert job_for("Contact", rid, timeout=180).state == "done"
    account_job = job_for("Account", account_id, timeout=60)
    assert account_job.state == "done", account_job.last_error

    enriches = calls(control, ORG_ENRICH, since)
    assert [(e["status"], e["credits"]) for e in enriches] == [(200, 2)]  # base + technographics
    after = control.record("Account", account_id)
    assert len(after["writes"]) == 1
    assert_firmographics(after["record"], company)
    assert after["record"]["Website"] == f"https://{company.domain}"
    assert after["record"]["Name"] == company.name
    # One Account job for all fifty, on the contacts' (urgent) queue.
    assert [j.id for j in account_jobs(store, account_id)] == [account_job.id]
    assert account_job.source == "outbound_message"
    assert account_job.input.get("for_contact_job") in {store.r.get(f"record:Contact:{rid}:last_job")
                                                        for rid in contact_ids}


def test_account_created_directly_is_found_by_its_website(control, store, job_for):
    company, people = companies_by_known_people()[1]
    since = mark(control)
    (account_id,) = control.create_records("Account", [{
        "Name": "Our name for them", "Website": f"https://www.{company.domain}/"}])

    job = job_for("Account", account_id)
    assert job.state == "done", job.last_error
    assert [e["status"] for e in calls(control, ORG_SEARCH, since)] == [200]
    assert len(calls(control, ORG_ENRICH, since)) == 1
    after = control.record("Account", account_id)
    assert_firmographics(after["record"], company)
    assert after["record"]["Website"] == f"https://www.{company.domain}/"  # filled only when blank
    assert after["record"]["Name"] == "Our name for them"

    # A contact created later that day uses the Account's job: no second
    # Account job, call or write.
    p = people[0]
    (contact_id,) = control.create_records("Contact", [{
        "FirstName": p.first_name, "LastName": p.last_name, "Email": p.email, "AccountId": account_id}])
    assert job_for("Contact", contact_id).state == "done"
    assert [j.id for j in account_jobs(store, account_id)] == [job.id]
    assert len(calls(control, ORG_ENRICH, since)) == 1
    assert len(control.record("Account", account_id)["writes"]) == 1


def test_account_nobody_can_identify_is_skipped_without_a_credit(control, job_for):
    since = mark(control)
    (account_id,) = control.create_records("Account", [{"Name": "Nobody Heard Of Us Ltd"}])
    job = job_for("Account", account_id)
    assert job.state == "skipped"
    assert "no company" in job.last_error
    assert calls(control, ORG_ENRICH, since) == []
    assert control.record("Account", account_id)["writes"] == []


def test_account_rerun_uses_the_cache_unless_forced(stack, control, store, job_for):
    company, _ = companies_by_known_people()[2]
    (account_id,) = control.create_records("Account", [{"Name": company.name, "Website": company.domain}])
    assert job_for("Account", account_id).state == "done"
    since = mark(control)

    def rerun(force: bool):
        resp = requests.post(f"{stack.web_url}/admin/rerun", timeout=10,
                             headers={"Authorization": f"Bearer {stack.admin_token}"},
                             json={"object": "Account", "ids": [account_id], "force": force})
        assert resp.status_code == 202, resp.text
        (job_id,) = store.r.smembers(f"run:{resp.json()['runId']}:jobs")
        return wait_for(lambda: (j := store.get(job_id)).final and j, 90, "the re-run job")

    assert rerun(force=False).state == "done"
    assert calls(control, ORG_ENRICH, since) == []        # answered from the 24-hour cache
    assert rerun(force=True).state == "done"
    assert len(calls(control, ORG_ENRICH, since)) == 1    # forced: asked Clodura again


def test_organisation_enrich_5xx_is_retried_until_it_answers(control, job_for):
    company, _ = companies_by_known_people()[3]
    since = mark(control)
    control.add_fault("clodura", path=ORG_ENRICH, status=503, body={"status": 503, "message": "down"}, times=2)
    (account_id,) = control.create_records("Account", [{"Name": company.name}])

    job = job_for("Account", account_id, timeout=90)
    assert job.state == "done", job.last_error
    assert [(e["status"], e.get("credits")) for e in calls(control, ORG_ENRICH, since)] == \
        [(503, None), (503, None), (200, 2)]
    assert_firmographics(control.record("Account", account_id)["record"], company)
