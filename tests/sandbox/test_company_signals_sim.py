"""The simulators' company endpoints over real HTTPS: Clearout's public
company autocomplete, Clodura's job posts and company news."""
from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

import pytest
import requests

from crm_enrich.sandbox.clearout import ClearoutSimConfig, create_clearout_app
from crm_enrich.sandbox.clodura import CloduraSimConfig, create_clodura_app
from crm_enrich.sandbox.clodura_signals import job_posts_of, news_of
from crm_enrich.sandbox.common import ServedApp, ensure_certificates
from crm_enrich.sandbox.dataset import build_dataset

TOKEN, KEY = "sandbox-clearout-token", "sandbox-clodura-key"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    certs = ensure_certificates(tmp_path_factory.mktemp("certs"))
    clearout = ServedApp(create_clearout_app(ClearoutSimConfig(api_tokens=[TOKEN])), certs).start()
    clodura = ServedApp(create_clodura_app(CloduraSimConfig(api_keys={KEY: "Max"})), certs).start()
    session = requests.Session()
    session.request = functools.partial(session.request, verify=str(certs.ca_pem))
    yield clearout.url, clodura.url, session
    clearout.stop()
    clodura.stop()


@pytest.fixture
def clearout(servers):
    url, _, session = servers
    assert session.post(url + "/_sandbox/clearout/reset").status_code == 204
    return lambda path="/public/companies/autocomplete", **kw: session.get(url + path, **kw)


@pytest.fixture
def clodura(servers):
    _, url, session = servers
    assert session.post(url + "/_sandbox/clodura/reset").status_code == 204

    def post(path, body, key=KEY):
        return session.post(f"{url}/api/v1/organisation/{path}", json=body, headers={"X-API-KEY": key})

    post.session, post.url = session, url
    return post


def test_autocomplete_is_public_free_and_near_exact(clearout):
    company = build_dataset().companies[3]
    for path in ("/public/companies/autocomplete", "/v2/public/companies/autocomplete"):
        answer = clearout(path, params={"query": f"  {company.name.upper()}, LLC "})   # no token needed
        assert answer.status_code == 200 and answer.json()["status"] == "success"
        (best, *_) = answer.json()["data"]
        assert (best["domain"], best["name"]) == (company.domain, company.name)
        assert 90 <= best["confidence_score"] <= 99 and best["logo_url"]
        assert int(answer.headers["x-ratelimit-limit"]) > 0      # rate-limited all the same
    by_site = clearout(params={"query": f"https://www.{company.domain}/about"}, headers={"Authorization": TOKEN})
    assert by_site.json()["data"][0]["confidence_score"] == 99
    assert clearout(params={"query": "Nothing Like Any Company"}).json() == {"status": "success", "data": []}
    # A bare first word of several names is only a guess: none confident.
    stem = company.name.split()[0]
    guesses = clearout(params={"query": stem}).json()["data"]
    assert guesses and all(g["confidence_score"] < 80 for g in guesses)
    assert [g["confidence_score"] for g in guesses] == sorted((g["confidence_score"] for g in guesses), reverse=True)


def test_autocomplete_validation_daily_limit_and_rate_limit(clearout, servers):
    url, _, session = servers
    missing = clearout()
    assert missing.status_code == 400 and missing.json()["error"]["reasons"][0]["location"] == "query"
    assert clearout(params={"query": " "}).json()["error"]["reasons"][0]["types"] == ["any.empty"]
    session.post(url + "/_sandbox/clearout/autocomplete", json={"daily_limit": 1})
    assert clearout(params={"query": "x"}).json()["status"] == "success"
    refused = clearout(params={"query": "x"})
    assert refused.status_code == 200 and refused.json()["status"] == "failed"
    assert refused.json()["error"]["code"] == 1017
    session.post(url + "/_sandbox/clearout/config", json={"rate_limit_per_minute": 1})
    session.post(url + "/_sandbox/clearout/autocomplete", json={"daily_limit": None})
    assert clearout(params={"query": "x"}).status_code == 200
    limited = clearout(params={"query": "x"})
    assert limited.status_code == 429 and limited.json()["error"]["code"] == 1030
    assert session.get(url + "/_sandbox/clearout/usage").json()["credits_spent"] == 0   # free


def busiest(kind):
    ds, today = build_dataset(), datetime.now(UTC).date()
    if kind == "posts":
        return max(ds.companies, key=lambda c: len(job_posts_of(c, today)))
    return next(c for c in ds.companies if news_of(c, today))


def test_job_posts_filter_by_window_and_charge_only_when_found(clodura):
    company, today = busiest("posts"), datetime.now(UTC).date()
    since = (today - timedelta(days=30)).isoformat()
    answer = clodura("jobpost", {"organisationId": company.organisation_id, "postedSince": since,
                                 "postedUntil": today.isoformat()})
    assert answer.status_code == 200
    body = answer.json()
    expected = [p for p in job_posts_of(company, today) if p["postedOn"] >= since]
    assert body["pagination"]["totalRecords"] == len(expected) > 0
    assert [p["postedOn"] for p in body["jobPosts"]] == sorted((p["postedOn"] for p in body["jobPosts"]),
                                                                reverse=True)
    assert body["creditsUsed"] == 2 and body["organisationId"] == company.organisation_id
    empty = clodura("jobpost", {"orgLinkedinUrl": company.linkedin_url, "postedSince": "2001-01-01",
                                "postedUntil": "2001-01-31"})
    assert empty.json()["jobPosts"] == [] and empty.json()["creditsUsed"] == 0


def test_news_by_category_and_window_cost_two_a_request(clodura):
    company, today = busiest("news"), datetime.now(UTC).date()
    every = news_of(company, today)
    category = every[0]["category"]
    answer = clodura("news", {"organisationId": company.organisation_id, "category": [category],
                              "publishedSince": (today - timedelta(days=365)).isoformat(),
                              "publishedUntil": today.isoformat()})
    assert answer.status_code == 200
    assert answer.json()["news"] == [a for a in every if a["category"] == category]
    assert answer.json()["creditsUsed"] == 2
    usage = clodura.session.get(clodura.url + "/_sandbox/clodura/usage").json()[KEY]
    assert usage["creditsSpent"] == 2


@pytest.mark.parametrize("body, status", [
    ({"publishedSince": "2026-01-01", "publishedUntil": "2026-02-01"}, 400),               # no organisation
    ({"organisationId": "o_x"}, 400),                                                       # dates required
    ({"organisationId": "o_x", "publishedSince": "01/01/2026", "publishedUntil": "2026-02-01"}, 400),
    ({"organisationId": "o_x", "publishedSince": "2026-03-01", "publishedUntil": "2026-02-01"}, 400),
    ({"organisationId": "o_x", "publishedSince": "2026-01-01", "publishedUntil": "2026-02-01",
      "category": ["Gossip"]}, 400),
    ({"organisationId": "o_x", "publishedSince": "2026-01-01", "publishedUntil": "2026-02-01", "page": 101}, 400),
    ({"organisationId": "o_unknown", "publishedSince": "2026-01-01", "publishedUntil": "2026-02-01"}, 404),
])
def test_news_refusals(clodura, body, status):
    assert clodura("news", body).status_code == status


def test_signals_need_a_key_and_credits(clodura):
    company, today = busiest("news"), datetime.now(UTC).date()
    body = {"organisationId": company.organisation_id, "publishedSince": (today - timedelta(days=365)).isoformat(),
            "publishedUntil": today.isoformat()}
    assert clodura("news", body, key="wrong").status_code == 401
    clodura.session.post(clodura.url + "/_sandbox/clodura/credits", json={"key": KEY, "remainingCredits": 1})
    assert clodura("news", body).status_code == 402
    assert clodura("jobpost", {"organisationId": company.organisation_id, "postedUntil": "2001-01-31"}
                   ).status_code == 200   # nothing found: nothing to charge


def test_a_request_wrong_in_several_ways_counts_as_one_refusal(clodura):
    def refused() -> int:
        return clodura.session.get(clodura.url + "/_sandbox/clodura/usage").json()[KEY]["rejected_400"]

    before = refused()
    bad_dates_and_page = {"organisationId": "o_x", "publishedSince": "01/01/2026", "publishedUntil": "2026-02-01",
                          "page": 0}
    assert clodura("news", bad_dates_and_page).status_code == 400
    assert clodura("jobpost", {"organisationId": "o_x", "postedSince": "yesterday", "page": "two"}).status_code == 400
    assert refused() == before + 2
