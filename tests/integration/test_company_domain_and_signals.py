"""A domain for a company name (Clearout's company autocomplete) and Account
signals (Clodura's job posts and news), on the real stack: a worker whose
field map has the signals uncommented, so it needs a stack of its own."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import requests

from crm_enrich.dev.devstack import Stack, wait_for
from crm_enrich.jobs.store import JobStore
from crm_enrich.sandbox.clearout_autocomplete import suggest
from crm_enrich.sandbox.clodura_signals import job_posts_of, news_of
from crm_enrich.sandbox.control import SandboxControl
from crm_enrich.sandbox.dataset import build_dataset
from tests.unit.test_salesforce_metadata import commented_out_mappings

from .conftest import final_job

AUTOCOMPLETE = "/public/companies/autocomplete"
JOB_POSTS, NEWS = "/api/v1/organisation/jobpost", "/api/v1/organisation/news"
ORG_SEARCH, ORG_ENRICH = "/api/v1/organisation/search", "/api/v1/organisation/enrich"
DEFAULT_CATEGORIES = {"Funding", "Acquisition", "Expansion", "Launch"}


@pytest.fixture(scope="module")
def sstack(tmp_path_factory):
    state = tmp_path_factory.mktemp("signals")
    (state / "field_map.toml").write_text(commented_out_mappings())
    with Stack(state, worker_concurrency=2, extra_env={
            "FIELD_MAP": str(state / "field_map.toml"), "SWEEP_INTERVAL_S": "1"}) as running:
        yield running


@pytest.fixture
def scontrol(sstack):
    return SandboxControl(sstack.sandbox.info)


@pytest.fixture
def sstore(sstack):
    return JobStore(sstack.redis_client())


def mark(control, service: str) -> int:
    return max([e["seq"] for e in control.log(service)] or [0])


def calls(control, service: str, path: str, since: int) -> list[dict]:
    return [e for e in control.log(service, since=since) if e["path"] == path]


def plain_companies():
    """Companies without a legal form in their name, not catch-all (their
    mail verifies at once), with people Clodura knows."""
    ds = build_dataset()
    known = {p.organisation_id for p in ds.people if p.known}
    return [c for c in ds.companies if c.organisation_id in known and not c.catch_all
            and c.name.split()[-1] not in ("Inc", "Group", "Co", "LLC", "Corp")]


def test_a_lead_with_a_company_and_no_website_gets_its_domain_its_company_and_an_email(scontrol, sstore):
    ds = build_dataset()
    company = plain_companies()[0]
    person = next(p for p in ds.people_at(company.organisation_id) if p.known and p.email_verdict == "Deliverable")
    # Spelt as a person types it: Clodura's name match misses it, Clearout's autocomplete does not.
    typed = f"{company.name}, Inc."
    assert suggest(ds, typed)[0]["domain"] == company.domain and suggest(ds, typed)[0]["confidence_score"] >= 80
    co_since, cl_since = mark(scontrol, "clearout"), mark(scontrol, "clodura")

    (lead_id,) = scontrol.create_records("Lead", [{"FirstName": person.first_name, "LastName": person.last_name,
                                                    "Company": typed}])
    job = final_job(sstore, "Lead", lead_id, timeout=90)
    assert job.state == "done", job.last_error
    lead = scontrol.record("Lead", lead_id)["record"]
    assert lead["Website"] == f"https://{company.domain}"          # filled: it was blank
    assert lead["NumberOfEmployees"] == company.employee_count      # the organisation, enriched by that domain
    assert lead["Email"] == person.email                            # revealed by name + domain
    assert lead["Email_Verification_Status__c"] == "valid"
    assert len(calls(scontrol, "clearout", AUTOCOMPLETE, co_since)) == 1
    assert [e["status"] for e in calls(scontrol, "clodura", ORG_SEARCH, cl_since)] == [200]
    assert [(e["status"], e["credits"]) for e in calls(scontrol, "clodura", ORG_ENRICH, cl_since)] == [(200, 1)]
    reveals = calls(scontrol, "clodura", "/api/v1/search/people/email/match", cl_since)
    assert len(reveals) == 1 and reveals[0]["status"] == 200


def test_a_suggestion_below_the_confidence_setting_is_not_used(scontrol, sstore):
    ds = build_dataset()
    stem = next(c.name.split()[0] for c in plain_companies()[5:]
                if sum(o.name.startswith(c.name.split()[0] + " ") for o in ds.companies) >= 2)
    suggestions = suggest(ds, stem)
    assert suggestions and max(s["confidence_score"] for s in suggestions) < 80
    co_since, cl_since = mark(scontrol, "clearout"), mark(scontrol, "clodura")

    (lead_id,) = scontrol.create_records("Lead", [{"FirstName": "Pat", "LastName": "Nobody", "Company": stem,
                                                    "Email": "pat.nobody@nowhere-known.example"}])
    job = final_job(sstore, "Lead", lead_id, timeout=90)
    assert job.state == "done", job.last_error
    lead = scontrol.record("Lead", lead_id)["record"]
    assert lead["Email_Verification_Status__c"] == "invalid"        # the job ran to its write
    assert not lead["Website"] and not lead["NumberOfEmployees"]     # but took no weak guess
    assert len(calls(scontrol, "clearout", AUTOCOMPLETE, co_since)) == 1
    assert calls(scontrol, "clodura", ORG_SEARCH, cl_since) == []
    assert calls(scontrol, "clodura", ORG_ENRICH, cl_since) == []


def expected_signals(company) -> dict:
    today = datetime.now(UTC).date()
    posts = [p for p in job_posts_of(company, today) if p["postedOn"] >= (today - timedelta(days=30)).isoformat()]
    news = [a for a in news_of(company, today) if a["category"] in DEFAULT_CATEGORIES
            and a["publishedAt"] >= (today - timedelta(days=90)).isoformat()]
    return {"posts": posts, "news": news}


def test_account_signals_are_written_when_mapped_and_asked_for_once_a_day(sstack, scontrol, sstore):
    company, expected = next((c, e) for c in plain_companies()[10:]
                             if len((e := expected_signals(c))["posts"]) >= 3 and e["news"])
    since = mark(scontrol, "clodura")
    (account_id,) = scontrol.create_records("Account", [{"Name": company.name,
                                                         "Website": f"https://www.{company.domain}"}])
    job = final_job(sstore, "Account", account_id, timeout=90)
    assert job.state == "done", job.last_error
    account = scontrol.record("Account", account_id)["record"]
    assert account["Open_Job_Posts__c"] == len(expected["posts"])
    assert account["Latest_Job_Titles__c"] == "; ".join(p["jobTitle"] for p in expected["posts"][:3])
    latest = expected["news"][0]
    assert account["Latest_News__c"] == f"{latest['articleTitle']} ({latest['url']})"
    assert account["Latest_News_At__c"] == latest["publishedAt"]
    assert [(e["status"], e["credits"]) for e in calls(scontrol, "clodura", JOB_POSTS, since)] == [(200, 2)]
    assert [(e["status"], e["credits"]) for e in calls(scontrol, "clodura", NEWS, since)] == [(200, 2)]

    # A re-run the same day enriches the Account again but asks for no signal.
    resp = requests.post(f"{sstack.web_url}/admin/rerun", json={"object": "Account", "ids": [account_id]},
                         headers={"Authorization": f"Bearer {sstack.admin_token}"}, timeout=30)
    assert resp.status_code in (200, 202), resp.text
    wait_for(lambda: (j := final_job(sstore, "Account", account_id)).id != job.id and j, 90,
             "the re-run's Account job to finish")
    assert len(calls(scontrol, "clodura", JOB_POSTS, since)) == 1
    assert len(calls(scontrol, "clodura", NEWS, since)) == 1


def test_signals_unmapped_cost_no_request(stack, control, job_for):
    """The default map (signals commented out): an Account is enriched, and
    neither job posts nor news are asked for."""
    company = plain_companies()[20]
    since = mark(control, "clodura")
    (account_id,) = control.create_records("Account", [{"Name": company.name,
                                                        "Website": f"https://{company.domain}"}])
    job = job_for("Account", account_id, timeout=90)
    assert job.state == "done", job.last_error
    assert len(calls(control, "clodura", ORG_ENRICH, since)) == 1
    assert calls(control, "clodura", JOB_POSTS, since) == [] and calls(control, "clodura", NEWS, since) == []
    assert "Open_Job_Posts__c" not in job.fields_written


def test_a_dry_run_prices_the_signals_and_the_real_charge_lies_inside(sstack, scontrol, sstore):
    companies = [c for c in plain_companies()[30:60] if c.total_funding][:4]
    ids = scontrol.create_records("Account", [{"Name": c.name, "Website": f"https://{c.domain}"} for c in companies],
                                  fire_outbound=False)
    admin = {"Authorization": f"Bearer {sstack.admin_token}"}
    dry = requests.post(f"{sstack.web_url}/admin/rerun", json={"object": "Account", "ids": ids, "dryRun": True},
                        headers=admin, timeout=60)
    assert dry.status_code == 200, dry.text
    estimate = dry.json()
    assert estimate["needs"]["job_posts"] == {"records": 4, "atLeast": 0.0, "atMost": 8.0}
    assert estimate["needs"]["news"] == {"records": 4, "atLeast": 0.0, "atMost": 8.0}
    low, high = estimate["credits"]["atLeast"], estimate["credits"]["atMost"]

    before = scontrol.clodura_usage()["creditsSpent"]
    run_id = requests.post(f"{sstack.web_url}/admin/rerun", json={"object": "Account", "ids": ids},
                           headers=admin, timeout=60).json()["runId"]
    wait_for(lambda: requests.get(f"{sstack.web_url}/admin/runs/{run_id}", headers=admin, timeout=30
                                  ).json()["status"] == "finished", 120, "the run to finish", interval=0.5)
    for account_id in ids:
        assert final_job(sstore, "Account", account_id).state == "done"
    real = round(scontrol.clodura_usage()["creditsSpent"] - before, 2)
    print(f"estimate {low}..{high} credits, real charge {real}; needs {estimate['needs']}")
    assert low <= real <= high
    assert real > 4 * 2          # the organisation enrichments (base + technographics) and some signals
