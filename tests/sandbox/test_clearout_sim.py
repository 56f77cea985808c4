"""Clearout v2 simulator over real HTTPS sockets."""
from __future__ import annotations

import functools
import time

import pytest
import requests

from crm_enrich.sandbox.clearout import ClearoutSimConfig, create_clearout_app
from crm_enrich.sandbox.common import ServedApp, ensure_certificates
from crm_enrich.sandbox.dataset import (
    VERDICT_CATCH_ALL,
    VERDICT_DELIVERABLE,
    VERDICT_UNDELIVERABLE,
    build_dataset,
)

TOKEN = "sandbox-clearout-token"

# docs/clearout.md#test-addresses, transcribed: local part -> (status, sub_status, safe_to_send, other fields)
SECTION_11 = {
    "valid": ("valid", 200, "yes", {}),
    "invalid": ("invalid", 406, "no", {"bounce_type": "hard"}),
    "catch_all": ("catch_all", 411, "risky", {}),
    "unknown": ("unknown", 412, "unknown", {}),
    "safe_to_send_yes": ("valid", 200, "yes", {}),
    "safe_to_send_no": ("invalid", 406, "no", {}),
    "safe_to_send_risky": ("catch_all", 411, "risky", {}),
    "disposable": ("valid", 200, "no", {"disposable": "yes"}),
    "role": ("valid", 200, "risky", {"role": "yes"}),
    "free": ("valid", 200, "yes", {"free": "yes"}),
    "gibberish": ("valid", 200, "risky", {"gibberish": "yes"}),
    "hard_bounce": ("invalid", 406, "no", {"bounce_type": "hard"}),
    "soft_bounce": ("invalid", 413, "no", {"bounce_type": "soft"}),
    "suggested_email_address": ("invalid", 403, "no", {"bounce_type": "hard"}),
    "syntax_error": ("invalid", 400, "no", {"bounce_type": "hard"}),
    "greylisted": ("unknown", 407, "unknown", {}),
    "spamtrap": ("invalid", 401, "no", {"bounce_type": "soft"}),
    "blocklist_email_address": ("invalid", 602, "no", {}),
    "allowlist_email_address": ("valid", 601, "yes", {}),
    "blocklist_domain": ("invalid", 604, "no", {}),
    "allowlist_domain": ("valid", 603, "yes", {}),
    "domain_not_found": ("invalid", 403, "no", {"bounce_type": "hard"}),
    "not_a_mailserver": ("invalid", 404, "no", {"bounce_type": "hard"}),
    "mailbox_not_found": ("invalid", 406, "no", {"bounce_type": "hard"}),
    "mailbox_quota_exceeded": ("invalid", 413, "no", {"bounce_type": "soft"}),
    "dns_query_timeout": ("unknown", 417, "unknown", {}),
    "unroutable_mailserver": ("invalid", 404, "no", {"bounce_type": "hard"}),
    "overquota_and_inactive": ("invalid", 428, "no", {"bounce_type": "soft"}),
    "receiving_limit_reached": ("invalid", 421, "no", {"bounce_type": "soft"}),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    certs = ensure_certificates(tmp_path_factory.mktemp("certs"))
    config = ClearoutSimConfig(api_tokens=[TOKEN, "second-token"], finder_queue_delay_s=0.2)
    served = ServedApp(create_clearout_app(config), certs).start()
    session = requests.Session()
    session.request = functools.partial(session.request, verify=str(certs.ca_pem))
    yield served, session
    served.stop()


@pytest.fixture
def api(server):
    served, session = server
    assert session.post(served.url + "/_sandbox/clearout/reset").status_code == 204

    class Api:
        url = served.url

        def post(self, path, body=None, auth=f"Bearer {TOKEN}", **kw):
            headers = {"Authorization": auth} if auth is not None else {}
            return session.post(self.url + "/v2" + path, json=body, headers=headers, **kw)

        def get(self, path, params=None, auth=f"Bearer {TOKEN}"):
            headers = {"Authorization": auth} if auth is not None else {}
            return session.get(self.url + "/v2" + path, params=params, headers=headers)

        def verify(self, email, **extra):
            return self.post("/email_verify/instant", {"email": email, **extra})

        def control(self, method, path, body=None):
            return session.request(method, self.url + "/_sandbox/clearout" + path, json=body)

        def usage(self):
            return self.control("GET", "/usage").json()

        def credits(self):
            return self.get("/email_verify/getcredits").json()["data"]["available_credits"]

    return Api()


@pytest.fixture(scope="module")
def ds():
    return build_dataset()


# -- test addresses (docs/clearout.md#test-addresses) -------------------------------

@pytest.mark.parametrize("local", sorted(SECTION_11))
def test_section_11_addresses(api, local):
    status, sub, safe, extra = SECTION_11[local]
    r = api.verify(f"{local}@example.com")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success"
    d = body["data"]
    assert d["email_address"] == f"{local}@example.com"
    assert (d["status"], d["sub_status"]["code"], d["safe_to_send"]) == (status, sub, safe)
    assert isinstance(d["sub_status"]["desc"], str) and d["sub_status"]["desc"]
    defaults = {"disposable": "no", "free": "no", "role": "no", "gibberish": "no", "bounce_type": ""}
    for name, value in {**defaults, **extra}.items():
        assert d[name] == value, name
    if local == "suggested_email_address":
        assert d["suggested_email_address"] and d["suggested_email_address"] != d["email_address"]
    else:
        assert d["suggested_email_address"] == ""
    assert d["detail_info"] == {"account": local, "domain": "example.com"}
    assert isinstance(d["time_taken"], int) and d["verified_on"]
    # test addresses are free
    assert api.credits() == 10000


def test_test_address_aliases(api):
    d = api.verify("whitelisted_domain@example.com").json()["data"]
    assert (d["status"], d["sub_status"]["code"]) == ("valid", 603)
    d = api.verify("blacklisted_email_address@example.com").json()["data"]
    assert (d["status"], d["sub_status"]["code"]) == ("invalid", 602)


# -- dataset verdicts and credits ------------------------------------------------------

def test_dataset_verdicts_and_charges(api, ds):
    good = next(p for p in ds.people if p.email_verdict == VERDICT_DELIVERABLE)
    bad = next(p for p in ds.people if p.email_verdict == VERDICT_UNDELIVERABLE)
    ca = next(p for p in ds.people if p.email_verdict == VERDICT_CATCH_ALL)
    cases = {
        good.email: ("valid", 200, "yes"),
        bad.email: ("invalid", 406, "no"),
        ca.email: ("catch_all", 411, "risky"),
        "someone@nowhere.invalid": ("invalid", 403, "no"),
    }
    for email, expected in cases.items():
        d = api.verify(email).json()["data"]
        assert (d["status"], d["sub_status"]["code"], d["safe_to_send"]) == expected, email
    assert api.verify(bad.email).json()["data"]["bounce_type"] == "hard"
    assert api.credits() == 10000 - 5
    # unknown results cost nothing
    api.verify("unknown@example.com")
    assert api.credits() == 10000 - 5
    assert api.usage()["credits_spent"] == 5
    creds = api.get("/email_verify/getcredits").json()["data"]
    assert creds["credits"]["available"] == creds["credits"]["total"] == 9995
    assert creds["credits"]["subs"] is None and creds["low_credit_balance_min_threshold"] == 50


def test_no_credits_is_402_but_test_addresses_still_work(api, ds):
    good = next(p for p in ds.people if p.email_verdict == VERDICT_DELIVERABLE)
    api.control("POST", "/config", {"credits": 0})
    r = api.verify(good.email)
    assert r.status_code == 402 and r.json()["error"]["code"] == 1002 and r.json()["status"] == "failed"
    assert api.verify("valid@example.com").status_code == 200
    r = api.post("/email_finder/instant", {"name": "Dana Ortiz", "domain": "x.example"})
    assert r.status_code == 402 and r.json()["error"]["code"] == 1099


def test_daily_limit_is_a_200_failed_envelope(api, ds):
    good = next(p for p in ds.people if p.email_verdict == VERDICT_DELIVERABLE)
    api.control("POST", "/config", {"daily_verify_limit": 1})
    assert api.verify(good.email).json()["status"] == "success"
    r = api.verify(good.email)
    assert r.status_code == 200
    assert r.json() == {"status": "failed", "error": {"code": 1017, "message": r.json()["error"]["message"]}}
    assert api.verify("valid@example.com").json()["status"] == "success"  # exempt


# -- auth --------------------------------------------------------------------------------

def test_auth_header_forms(api):
    for auth in (f"Bearer {TOKEN}", f"Bearer:{TOKEN}", TOKEN, f"bearer {TOKEN}", "Bearer second-token"):
        r = api.post("/email_verify/instant", {"email": "valid@example.com"}, auth=auth)
        assert r.status_code == 200, auth
    for auth in (None, "", "Bearer nope", "nope"):
        r = api.post("/email_verify/instant", {"email": "valid@example.com"}, auth=auth)
        assert r.status_code == 401
        assert r.json() == {"status": "failed", "error": {"code": 1000, "message": r.json()["error"]["message"]}}
    # auth comes before routing
    assert api.get("/no/such/path", auth="Bearer nope").status_code == 401
    r = api.get("/no/such/path")
    assert r.status_code == 404 and r.json()["status"] == "failed"
    assert api.usage()["rejected_401"] == 5


# -- validation, content type, flat --------------------------------------------------------

def test_validation_envelope(api):
    r = api.post("/email_verify/instant", {})
    assert r.status_code == 400
    err = r.json()["error"]
    assert r.json()["status"] == "failed" and "code" not in err
    assert err["reasons"][0]["field"] == ["email"] and err["reasons"][0]["types"] == ["any.required"]
    assert err["reasons"][0]["location"] == "body"
    r = api.verify("  ")
    assert r.json()["error"]["reasons"][0]["types"] == ["any.empty"]
    for bad in (180001, -1, "fast", 1.5):
        assert api.verify("valid@example.com", timeout=bad).status_code == 400
    r = api.get("/email_finder/instant/queue_status")
    assert r.status_code == 400 and r.json()["error"]["reasons"][0]["location"] == "query"


def test_non_json_is_415(api, server):
    served, session = server
    r = session.post(served.url + "/v2/email_verify/instant", data="email=valid@example.com",
                     headers={"Authorization": TOKEN, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and r.json()["status"] == "failed"


def test_flat_response(api):
    r = api.post("/email_verify/instant?response=flat", {"email": "valid@example.com"})
    d = r.json()["data"]
    assert d["sub_status_code"] == 200 and d["detail_info_domain"] == "example.com"
    assert "sub_status" not in d


# -- timeouts (524) ---------------------------------------------------------------------------

def test_slow_switch_gives_524_without_charge(api, ds):
    good = next(p for p in ds.people if p.email_verdict == VERDICT_DELIVERABLE)
    assert api.control("POST", "/slow", {"times": 2}).json() == {"verify": 2, "finder": 0}
    for _ in range(2):
        r = api.verify(good.email)
        assert r.status_code == 524
        body = r.json()
        assert body["status"] == "failed" and "code" not in body["error"]
        assert body["error"]["message"] == "Timeout Occurred"
        assert body["error"]["additional_info"] == {"resource_name": "email", "resource_value": good.email}
    assert api.verify(good.email).status_code == 200
    assert api.credits() == 10000 - 1
    assert api.usage()["timeouts_524"] == 2


def test_small_timeout_gives_524(api):
    assert api.verify("valid@example.com", timeout=1).status_code == 524
    assert api.verify("valid@example.com", timeout=180000).status_code == 200


# -- rate limit -----------------------------------------------------------------------------------

def test_rate_limit_headers_and_429(api):
    api.control("POST", "/config", {"rate_limit_per_minute": 3})
    r = api.verify("valid@example.com")
    assert r.headers["x-ratelimit-limit"] == "3" and r.headers["x-ratelimit-remaining"] == "2"
    assert 0 < int(r.headers["x-ratelimit-reset"]) <= 60
    assert [api.verify("valid@example.com").status_code for _ in range(3)] == [200, 200, 429]
    r = api.verify("valid@example.com")
    assert r.status_code == 429 and r.json()["error"]["code"] == 1030 and r.json()["status"] == "failed"
    assert r.headers["x-ratelimit-remaining"] == "0" and "x-ratelimit-reset" in r.headers
    # other families have their own window
    assert api.get("/email_verify/getcredits").status_code == 429  # same family: email_verify
    assert api.post("/email_finder/instant", {"name": "x", "domain": "nowhere.test"}).status_code == 200
    # a second token has its own window
    assert api.verify("valid@example.com").status_code == 429
    assert api.post("/email_verify/instant", {"email": "valid@example.com"},
                    auth="second-token").status_code == 200
    assert api.usage()["rate_limited"] == 4
    # the window resets
    api.control("POST", "/config", {"rate_limit_window_s": 0.2})
    deadline = time.monotonic() + 5
    while api.verify("valid@example.com").status_code != 200:
        assert time.monotonic() < deadline


# -- finder --------------------------------------------------------------------------------------------

def finder_people(ds, queued: bool, n: int = 1):
    """People whose search is (or is not) slow enough to be queued by default."""
    from crm_enrich.sandbox.clearout import _h

    out = []
    for p in ds.people:
        if p.email_verdict != VERDICT_DELIVERABLE:
            continue
        c = ds.company(p.organisation_id)
        key = f"{p.first_name} {p.last_name}".lower() + "|" + c.domain
        if ((_h("finder-slow", key) % 1000) < 250) == queued:
            out.append((p, c))
            if len(out) == n:
                return out
    raise AssertionError("no such people")


def test_finder_found_and_charged(api, ds):
    [(p, c)] = finder_people(ds, queued=False)
    r = api.post("/email_finder/instant", {"name": f"{p.first_name} {p.last_name}", "domain": c.domain})
    assert r.status_code == 200, r.text
    d = r.json()["data"]
    assert d["emails"] == [{"email_address": p.email, "role": "no", "business": "yes"}]
    assert d["total"] == 1 and 0 <= d["confidence_score"] <= 100
    assert d["first_name"] == p.first_name.lower() and d["domain"] == c.domain
    assert api.credits() == 10000 - 4
    # by company name instead of domain
    r = api.post("/email_finder/instant", {"name": f"{p.first_name} {p.last_name}", "domain": c.name,
                                           "timeout": 120000})
    assert r.json()["data"]["emails"][0]["email_address"] == p.email


def test_finder_not_found_and_bad_names(api):
    r = api.post("/email_finder/instant", {"name": "Nobody Here", "domain": "nowhere.invalid"})
    assert r.status_code == 200 and r.json()["status"] == "failed" and r.json()["error"]["code"] == 1027
    r = api.post("/email_finder/instant", {"name": "R2 D2", "domain": "nowhere.invalid"})
    assert r.status_code == 200 and r.json()["error"]["code"] == 1088
    assert api.post("/email_finder/instant", {"name": "Dana"}).status_code == 400
    assert api.credits() == 10000


def test_finder_queued_then_queue_status(api, ds):
    [(p, c)] = finder_people(ds, queued=True)
    r = api.post("/email_finder/instant", {"name": f"{p.first_name} {p.last_name}", "domain": c.domain})
    assert r.status_code == 524
    info = r.json()["error"]["additional_info"]
    assert info["resource_name"] == "email_finder" and len(info["queue_id"]) == 24
    qid = info["queue_id"]
    first = api.get("/email_finder/instant/queue_status", {"qid": qid}).json()
    assert first == {"status": "success", "data": {"query_status": "in_progress"}}
    assert api.credits() == 10000
    deadline = time.monotonic() + 5
    while True:
        d = api.get("/email_finder/instant/queue_status", {"qid": qid}).json()["data"]
        if d["query_status"] == "completed":
            break
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert d["emails"][0]["email_address"] == p.email
    api.get("/email_finder/instant/queue_status", {"qid": qid})
    assert api.credits() == 10000 - 4  # charged once
    r = api.get("/email_finder/instant/queue_status", {"qid": "0" * 24})
    assert r.status_code == 200 and r.json()["error"]["code"] == 1104
    # with a long enough timeout the same search answers directly
    r = api.post("/email_finder/instant", {"name": f"{p.first_name} {p.last_name}", "domain": c.domain,
                                           "timeout": 120000})
    assert r.status_code == 200


def test_finder_queue_false_and_slow_switch(api, ds):
    [(p, c)] = finder_people(ds, queued=True)
    r = api.post("/email_finder/instant", {"name": f"{p.first_name} {p.last_name}", "domain": c.domain,
                                           "queue": False})
    assert r.status_code == 524 and "queue_id" not in r.json()["error"]["additional_info"]
    [(q, qc)] = finder_people(ds, queued=False)
    api.control("POST", "/slow", {"times": 1, "kind": "finder"})
    r = api.post("/email_finder/instant", {"name": f"{q.first_name} {q.last_name}", "domain": qc.domain})
    assert r.status_code == 524 and r.json()["error"]["additional_info"]["queue_id"]


def test_usage_and_reset(api):
    api.verify("valid@example.com")
    api.post("/email_verify/instant", {"email": "valid@example.com"}, auth="nope")
    u = api.usage()
    assert u["calls"] == {"email_verify/instant": 1} and u["rejected_401"] == 1
    api.control("POST", "/reset")
    assert api.usage()["calls"] == {}
