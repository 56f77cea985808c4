"""Account signals: reading job posts and news into the field map's
sources (pure), and an Account job that asks for them only when mapped,
once per Account a day."""
from __future__ import annotations

import copy
from datetime import date

import pytest

from crm_enrich import keys
from crm_enrich.field_map import load_field_map
from crm_enrich.flow.signals import (
    job_post_sources,
    job_posts_request,
    news_request,
    news_sources,
    signals_wanted,
)
from crm_enrich.jobs.state import State
from crm_enrich.salesforce.gateway import SalesforceFailure
from tests.unit.flow.fakes import salesforce_busy
from tests.unit.flow.harness import ACCOUNT_ID
from tests.unit.flow.test_account_job import ACME, ACME_ENRICHED, account
from tests.unit.test_salesforce_metadata import commented_out_mappings

POSTS = {"pagination": {"page": 1, "totalRecords": 31, "totalPages": 2},
         "jobPosts": [{"jobTitle": "Data Engineer", "postedOn": "2026-11-02"},
                      {"jobTitle": "Account Executive", "postedOn": "2026-11-20"},
                      {"jobTitle": "  Product Manager ", "postedOn": "2026-11-10"},
                      {"jobTitle": "HR Generalist", "postedOn": "2026-11-15"}, "junk"]}
NEWS = {"news": [{"articleTitle": "Acme opens in Pune", "publishedAt": "2026-10-01", "url": "https://n.test/1"},
                 {"articleTitle": "Acme raises Series B", "publishedAt": "2026-11-11", "url": "https://n.test/2"},
                 {"articleTitle": "", "publishedAt": "2026-11-30"}]}


def test_job_posts_give_the_windows_count_and_the_three_latest_titles():
    assert job_post_sources(POSTS) == {"signals.open_job_posts": 31,
                                       "signals.latest_job_titles": ["Account Executive", "HR Generalist",
                                                                     "Product Manager"]}
    # Without a usable total, the page's own count; none found is a count of 0.
    assert job_post_sources({"jobPosts": POSTS["jobPosts"][:2]})["signals.open_job_posts"] == 2
    assert job_post_sources({"jobPosts": []}) == {"signals.open_job_posts": 0, "signals.latest_job_titles": None}
    assert job_post_sources(None) == {}          # Clodura does not know the organisation


def test_news_give_the_latest_articles_headline_url_and_date():
    assert news_sources(NEWS) == {"signals.latest_news": "Acme raises Series B (https://n.test/2)",
                                  "signals.latest_news_url": "https://n.test/2",
                                  "signals.latest_news_at": "2026-11-11"}
    assert news_sources({"news": [{"articleTitle": "No link", "publishedAt": "2026-11-01"}]})[
        "signals.latest_news"] == "No link"
    assert news_sources({"news": []}) == {} and news_sources(None) == {}


def test_requests_ask_for_the_last_30_and_90_days():
    today = date(2026, 12, 1)
    assert job_posts_request("o_1", today) == {"organisationId": "o_1", "postedSince": "2026-11-01",
                                               "postedUntil": "2026-12-01", "page": 1}
    assert news_request("o_1", today, ["Funding", "Launch"]) == {
        "organisationId": "o_1", "publishedSince": "2026-09-02", "publishedUntil": "2026-12-01",
        "category": ["Funding", "Launch"], "page": 1}


def test_signals_are_wanted_only_when_mapped(tmp_path):
    assert signals_wanted(load_field_map()) == frozenset()
    path = tmp_path / "map.toml"
    path.write_text(commented_out_mappings())
    assert signals_wanted(load_field_map(path)) == {"job_posts", "news"}


def with_signals(flow, tmp_path):
    path = tmp_path / "map.toml"
    path.write_text(commented_out_mappings())
    flow.svc.field_map = load_field_map(path)
    asked = []

    def job_posts(request):
        asked.append(("job_posts", request))
        return {"body": copy.deepcopy(POSTS), "credits": 2}

    def company_news(request):
        asked.append(("news", request))
        return {"body": copy.deepcopy(NEWS), "credits": 2}

    flow.clodura.job_posts, flow.clodura.company_news = job_posts, company_news
    account(flow)
    flow.clodura.organisations, flow.clodura.organisation = [ACME], ACME_ENRICHED
    return asked


def test_an_account_job_writes_its_signals_and_a_second_job_that_day_asks_for_none(flow, tmp_path):
    asked = with_signals(flow, tmp_path)
    first = flow.started(flow.new_job("Account", ACCOUNT_ID))
    assert flow.advance(first) == State.WRITING
    assert [kind for kind, _ in asked] == ["job_posts", "news"]
    assert asked[1][1]["category"] == ["Funding", "Acquisition", "Expansion", "Launch"]
    (write,) = flow.queued_writes()
    assert {k: v for k, v in write["changes"].items() if k.startswith(("Open", "Latest"))} == {
        "Open_Job_Posts__c": 31, "Latest_Job_Titles__c": "Account Executive; HR Generalist; Product Manager",
        "Latest_News__c": "Acme raises Series B (https://n.test/2)", "Latest_News_At__c": "2026-11-11"}
    assert flow.spent() == 2 + 2 + 2            # organisation enrich with technographics + both signals
    assert flow.store.r.get(keys.signal_asked("news", ACCOUNT_ID[:15])) == first

    assert flow.write_batch() == 1
    # Another job that day, even a forced one, asks for no signal: the fields keep what the first wrote.
    second = flow.started(flow.new_job("Account", ACCOUNT_ID, source="rerun", force=True))
    assert flow.advance(second) in (State.WRITING, State.DONE)
    assert len(asked) == 2
    assert not any(k.startswith(("Open", "Latest")) for item in flow.queued_writes() for k in item["changes"])
    assert flow.salesforce.records[("Account", ACCOUNT_ID)]["Open_Job_Posts__c"] == 31


def test_unmapped_signals_are_never_asked_for(flow, tmp_path):
    asked = with_signals(flow, tmp_path)
    flow.svc.field_map = load_field_map()
    job_id = flow.started(flow.new_job("Account", ACCOUNT_ID))
    assert flow.advance(job_id) == State.WRITING
    assert asked == []
    assert not flow.store.r.keys("signals:*")


def test_a_replayed_account_job_asks_for_its_signals_once(make_flow, tmp_path):
    flow = make_flow(cache_ttl_s=0)
    asked = with_signals(flow, tmp_path)
    job_id = flow.started(flow.new_job("Account", ACCOUNT_ID))
    flow.salesforce.fail("describe", salesforce_busy())    # after the signals, before the write
    with pytest.raises(SalesforceFailure):
        flow.advance(job_id)
    assert flow.advance(job_id) == State.WRITING
    assert [kind for kind, _ in asked] == ["job_posts", "news"]
    assert flow.spent() == 2 + 2 + 2
