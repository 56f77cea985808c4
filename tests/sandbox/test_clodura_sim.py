"""Clodura simulator over real HTTPS sockets (no Flask test client)."""
from __future__ import annotations

import functools
import time

import pytest
import requests

from crm_enrich.sandbox.clodura import CloduraSimConfig, create_clodura_app
from crm_enrich.sandbox.common import ServedApp, ensure_certificates
from crm_enrich.sandbox.dataset import (
    VERDICT_CATCH_ALL,
    VERDICT_DELIVERABLE,
    VERDICT_UNDELIVERABLE,
    build_dataset,
    demo_contacts,
)

KEY = "sandbox-clodura-key"
PROSPECT_KEY = "prospect-key"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    certs = ensure_certificates(tmp_path_factory.mktemp("certs"))
    config = CloduraSimConfig(api_keys={KEY: "Max", PROSPECT_KEY: "Prospect"})
    served = ServedApp(create_clodura_app(config), certs).start()
    # verify= goes on every call: REQUESTS_CA_BUNDLE in the environment would
    # otherwise win over Session.verify (a requests quirk).
    session = requests.Session()
    session.request = functools.partial(session.request, verify=str(certs.ca_pem))
    yield served, session
    served.stop()


@pytest.fixture
def api(server):
    served, session = server
    assert session.post(served.url + "/_sandbox/clodura/reset").status_code == 204

    class Api:
        url = served.url

        def post(self, path, body=None, key=KEY, **kw):
            headers = {"X-API-KEY": key} if key else {}
            return session.post(self.url + "/api/v1" + path, json=body, headers=headers, **kw)

        def get(self, path, key=KEY):
            headers = {"X-API-KEY": key} if key else {}
            return session.get(self.url + "/api/v1" + path, headers=headers)

        def control(self, method, path, body=None):
            return session.request(method, self.url + "/_sandbox" + path, json=body)

        def usage(self, key=KEY):
            return self.control("GET", "/clodura/usage").json()[key]

        def last_log(self, endpoint):
            return [e for e in self.control("GET", "/log").json() if e.get("endpoint") == endpoint][-1]

        def credits(self, key=KEY):
            return self.get("/credits", key=key).json()["remainingCredits"]

    return Api()


@pytest.fixture(scope="module")
def ds():
    return build_dataset()


def known_person(ds, catch_all=False):
    companies = {c.organisation_id: c for c in ds.companies}
    for p in ds.people:
        c = companies[p.organisation_id]
        if p.known and c.catch_all == catch_all and p.email_verdict != VERDICT_UNDELIVERABLE:
            return p, c
    raise AssertionError("no such person")


# -- auth -----------------------------------------------------------------

def test_missing_or_unknown_key_is_401(api):
    for key in (None, "nope"):
        r = api.post("/cleanup/enrich", {"email": "a@b.example"}, key=key)
        assert r.status_code == 401
        assert r.json()["status"] == 401 and r.json()["message"]
    assert api.usage()["accepted"] == 0


def test_header_name_is_case_insensitive(api, server):
    served, session = server
    r = session.get(served.url + "/api/v1/credits", headers={"x-api-key": KEY})
    assert r.status_code == 200


# -- enrich ---------------------------------------------------------------

def test_enrich_full_match_by_linkedin_costs_two(api, ds):
    p, c = known_person(ds)
    r = api.post("/cleanup/enrich", {"linkedinUrl": p.linkedin_url})
    assert r.status_code == 200
    body = r.json()
    assert body["creditsUsed"] == 2
    [person] = body["data"]
    assert person["personId"] == p.person_id
    assert person["personTitle"] == p.title
    assert person["functional"] == [p.department]
    assert person["organisation"]["organisationId"] == c.organisation_id
    assert person["organisation"]["organisationEmployeeSize"] == c.employee_size
    assert api.credits() == pytest.approx(10000 - 2)


def test_enrich_by_names_and_company_case_insensitive(api, ds):
    p, c = known_person(ds)
    r = api.post("/cleanup/enrich", {"firstName": p.first_name.upper(), "lastName": p.last_name.lower(),
                                     "organisationName": c.name.lower()})
    assert r.json()["data"][0]["personId"] == p.person_id
    r = api.post("/cleanup/enrich", {"email": p.email.upper()})
    assert r.json()["data"][0]["personTitle"] == p.title


def test_the_log_names_who_asked_and_about_whom_without_the_address(api, ds):
    p, _ = known_person(ds)
    other = next(q for q in ds.people if q.known and q.email != p.email)
    subjects = []
    for person in (p, p, other):
        api.post("/cleanup/enrich", {"email": person.email})
        entry = api.last_log("cleanup/enrich")
        assert entry["client"] == "127.0.0.1" and person.email not in str(entry)
        subjects.append(entry["subject"])
    api.post("/verify/email", {"email": p.email.upper()})
    api.post("/verify/email", {"email": p.email})
    verified = [e["subject"] for e in api.control("GET", "/log").json() if e.get("endpoint") == "verify/email"]
    assert subjects[0] == subjects[1] != subjects[2]  # repeats are countable
    assert verified[-1] == verified[-2]


def test_enrich_unknown_person_is_free(api, ds):
    unknown = next(p for p in ds.people if not p.known)
    r = api.post("/cleanup/enrich", {"email": unknown.email, "linkedinUrl": unknown.linkedin_url})
    assert r.status_code == 200
    assert r.json() == {"data": [], "creditsUsed": 0}
    assert api.credits() == pytest.approx(10000)
    assert api.last_log("cleanup/enrich")["credits"] == 0


def test_enrich_organisation_only_costs_one(api, ds):
    unknown = next(p for p in ds.people if not p.known)
    company = ds.company(unknown.organisation_id)
    r = api.post("/cleanup/enrich", {"firstName": unknown.first_name, "lastName": unknown.last_name,
                                     "orgLinkedinUrl": company.linkedin_url})
    body = r.json()
    assert r.status_code == 200 and body["creditsUsed"] == 1
    [row] = body["data"]
    assert row["personId"] is None and row["personTitle"] is None
    assert row["organisation"]["organisationName"] == company.name
    assert api.credits() == pytest.approx(10000 - 1)
    assert api.last_log("cleanup/enrich")["credits"] == 1


def test_enrich_without_identifier_is_400(api):
    assert api.post("/cleanup/enrich", {}).status_code == 400
    assert api.post("/cleanup/enrich", {"email": "  "}).status_code == 400
    assert api.usage()["rejected_400"] == 2


# -- verify ---------------------------------------------------------------

def test_verify_email_verdicts_and_charge(api, ds):
    good, _ = known_person(ds)
    bad = next(p for p in ds.people if p.email_verdict == VERDICT_UNDELIVERABLE)
    ca, _ = known_person(ds, catch_all=True)
    typo = "x" + good.email
    expected = {good.email: VERDICT_DELIVERABLE, bad.email: VERDICT_UNDELIVERABLE,
                ca.email: VERDICT_CATCH_ALL, typo: VERDICT_UNDELIVERABLE,
                "someone@nowhere.invalid": VERDICT_UNDELIVERABLE}
    for email, verdict in expected.items():
        r = api.post("/verify/email", {"email": email})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["result"] == verdict
        assert body["status"] == "Completed" and body["email"] == email
        assert body["deepVerification"] is False and body["docId"]
    assert api.credits() == pytest.approx(10000 - 0.04 * len(expected))
    r = api.post("/verify/email", {"email": good.email, "deepVerification": True})
    assert r.status_code == 200
    assert api.usage()["creditsSpent"] == pytest.approx(0.04 * len(expected) + 0.1)
    assert api.last_log("verify/email")["credits"] == pytest.approx(0.1)


def test_verify_validation_and_plan(api):
    assert api.post("/verify/email", {}).status_code == 400
    assert api.post("/verify/email", {"email": "not-an-address"}).status_code == 400
    assert api.post("/verify/email", {"email": "a@b.example"}, key=PROSPECT_KEY).status_code == 403
    assert api.credits() == pytest.approx(10000)


# -- credits endpoint --------------------------------------------------------

def test_credits_shapes(api, ds):
    assert api.get("/credits").json() == {"remainingCredits": 10000}
    p, _ = known_person(ds)
    api.post("/cleanup/enrich", {"linkedinUrl": p.linkedin_url}, key=PROSPECT_KEY)
    assert api.get("/credits", key=PROSPECT_KEY).json() == {
        "contactsView": 2, "maxContacts": "1000", "directDials": 0, "maxDirectDials": 200}


# -- rate limits and credits -------------------------------------------------

def test_per_second_limit_gives_429_then_recovers(api):
    api.control("POST", "/clodura/config", {"rate_limits": {KEY: [[2, 30]]}})
    assert [api.get("/credits").status_code for _ in range(2)] == [200, 200]
    r = api.get("/credits")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    usage = api.usage()
    assert usage["accepted"] == 2 and usage["rejected_429"] == 1
    # Shrink the window and wait on the condition rather than a fixed sleep.
    api.control("POST", "/clodura/config", {"rate_limits": {KEY: [[2, 0.2]]}})
    deadline = time.monotonic() + 5
    while api.get("/credits").status_code != 200:
        assert time.monotonic() < deadline


def test_day_limit_gives_409(api):
    api.control("POST", "/clodura/config", {"day_seconds": 3600, "rate_limits": {KEY: [[100, 1], [3, 3600]]}})
    codes = [api.get("/credits").status_code for _ in range(5)]
    assert codes == [200, 200, 200, 409, 409]
    r = api.get("/credits")
    assert r.status_code == 409 and int(r.headers["Retry-After"]) > 3000
    assert api.usage()["rejected_409"] == 3


def test_rejected_requests_do_not_charge(api, ds):
    p, _ = known_person(ds)
    api.control("POST", "/clodura/config", {"rate_limits": {KEY: [[1, 30]]}})
    assert api.post("/cleanup/enrich", {"linkedinUrl": p.linkedin_url}).status_code == 200
    assert api.post("/cleanup/enrich", {"linkedinUrl": p.linkedin_url}).status_code == 429
    assert api.usage()["creditsSpent"] == 2


def test_zero_credits_gives_402(api, ds):
    p, _ = known_person(ds)
    api.control("POST", "/clodura/credits", {"key": KEY, "remainingCredits": 0})
    assert api.post("/cleanup/enrich", {"linkedinUrl": p.linkedin_url}).status_code == 402
    assert api.post("/verify/email", {"email": p.email}).status_code == 402
    # a no-match costs nothing, so it still succeeds
    assert api.post("/cleanup/enrich", {"email": "nobody@nowhere.invalid"}).status_code == 200
    usage = api.usage()
    assert usage["rejected_402"] == 2 and usage["remainingCredits"] == 0
    api.control("POST", "/clodura/credits", {"key": KEY, "remainingCredits": 1.5})
    assert api.post("/cleanup/enrich", {"linkedinUrl": p.linkedin_url}).status_code == 402
    assert api.post("/verify/email", {"email": p.email}).status_code == 200


def test_reset_restores_everything(api, ds):
    p, _ = known_person(ds)
    api.control("POST", "/clodura/config", {"rate_limits": {KEY: [[1, 30]]}})
    api.post("/cleanup/enrich", {"linkedinUrl": p.linkedin_url})
    api.control("POST", "/clodura/reset")
    assert api.control("GET", "/log").json() == []
    assert api.usage()["accepted"] == 0
    assert [api.get("/credits").status_code for _ in range(3)] == [200, 200, 200]
    assert api.credits() == 10000


# -- dataset ----------------------------------------------------------------

def test_dataset_is_deterministic_and_sized(ds):
    import random

    from crm_enrich.sandbox.dataset import _build_companies, _build_people

    rng = random.Random(20261121)
    fresh_companies = _build_companies(rng, 500)
    fresh_people = _build_people(rng, fresh_companies, 5000)
    assert fresh_people[0] == ds.people[0] and fresh_companies[0] == ds.companies[0]
    assert build_dataset(1).people[0] != ds.people[0]
    assert len(ds.companies) == 500 and len(ds.people) >= 5000
    assert len({c.name for c in ds.companies}) == 500 and len({c.domain for c in ds.companies}) == 500
    assert len({p.email for p in ds.people}) == len(ds.people)
    unknown = [p for p in ds.people if not p.known]
    assert 0.04 * len(ds.people) < len(unknown) < 0.12 * len(ds.people)
    assert all(ds.find_person(email=p.email) is None for p in unknown[:50])
    assert any(c.catch_all for c in ds.companies)
    assert all(c.domain.endswith((".example", ".test")) for c in ds.companies)


def test_find_person_rules(ds):
    p, c = known_person(ds)
    assert ds.find_person(linkedin_url=p.linkedin_url.rstrip("/").upper()) is p
    assert ds.find_person(first_name=p.first_name, last_name=p.last_name) is None  # no company
    assert ds.find_person(first_name=p.first_name, last_name=p.last_name, company_domain=c.domain) is p
    assert ds.find_person(first_name=p.first_name, organisation_name=c.name) is None
    assert ds.company_by_domain(c.domain) is c and ds.company_by_name(c.name.upper()) is c


def test_demo_contacts_mix(ds):
    contacts = demo_contacts(200)
    assert contacts == demo_contacts(200)
    assert len({c["_person_id"] for c in contacts}) == 200
    by_case = {}
    for c in contacts:
        by_case.setdefault(c["_case"], []).append(c)
        assert "Title" not in c and "Department" not in c
        assert c["_domain"] == ds.company_by_name(c["_company"]).domain
    assert {k: len(v) for k, v in by_case.items()} == {
        "known": 120, "known_no_email": 30, "known_wrong_email": 20, "catch_all": 10, "unknown": 20}
    assert all(ds.verdict_for_email(c["Email"]) == VERDICT_DELIVERABLE for c in by_case["known"])
    assert all("Email" not in c for c in by_case["known_no_email"])
    assert all(ds.verdict_for_email(c["Email"]) == VERDICT_UNDELIVERABLE for c in by_case["known_wrong_email"])
    assert all(ds.verdict_for_email(c["Email"]) == VERDICT_CATCH_ALL for c in by_case["catch_all"])
    for c in by_case["known_wrong_email"] + by_case["known_no_email"]:
        found = ds.find_person(first_name=c["FirstName"], last_name=c["LastName"], organisation_name=c["_company"])
        assert found is not None and found.person_id == c["_person_id"]
    assert all(ds.find_person(email=c["Email"]) is None for c in by_case["unknown"])
