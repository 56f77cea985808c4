"""Clodura simulator: async reveals, queued verifications, webhooks and their
fault switches, organisation enrich — over real HTTPS sockets."""
from __future__ import annotations

import functools
import threading
import time

import pytest
import requests
from flask import Flask, jsonify, request

from crm_enrich.sandbox.clodura import (
    CloduraSimConfig,
    create_clodura_app,
    deep_verdict,
    forge_url,
)
from crm_enrich.sandbox.common import ServedApp, ensure_certificates
from crm_enrich.sandbox.dataset import (
    VERDICT_CATCH_ALL,
    VERDICT_DELIVERABLE,
    VERDICT_UNDELIVERABLE,
    build_dataset,
)

MAX = "max-key"
PROSPECT = "prospect-key"
FREE = "free-key"


class Listener:
    """A webhook receiver that records every POST; `fail_next` makes the next
    n deliveries answer 500."""

    def __init__(self):
        self.lock = threading.Lock()
        self.received: list[tuple[str, dict]] = []
        self.fail_next = 0
        app = Flask("listener")

        @app.post("/hooks/<token>")
        def hook(token):
            with self.lock:
                if self.fail_next > 0:
                    self.fail_next -= 1
                    return "boom", 500
                self.received.append((token, request.get_json()))
            return jsonify(ok=True)

        self.app = app

    def clear(self):
        with self.lock:
            self.received.clear()
            self.fail_next = 0

    def wait_for(self, predicate, timeout=5.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                items = list(self.received)
            if predicate(items):
                return items
            time.sleep(0.01)
        raise AssertionError(f"condition not met; received {items!r}")

    def snapshot(self):
        with self.lock:
            return list(self.received)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    certs = ensure_certificates(tmp_path_factory.mktemp("certs"))
    config = CloduraSimConfig(
        api_keys={MAX: "Max", PROSPECT: "Prospect", FREE: "Free Forever"},
        webhook_delay_s=0.05,
        webhook_retry_delays_s=[0.05, 0.05, 0.05],
        webhook_verify=str(certs.ca_pem),
        # the plans' 10/s bursts are not what these tests are about
        rate_limits={k: [(10_000, 1.0)] for k in (MAX, PROSPECT, FREE)},
    )
    served = ServedApp(create_clodura_app(config), certs).start()
    listener = Listener()
    hook_server = ServedApp(listener.app, certs).start()
    session = requests.Session()
    session.request = functools.partial(session.request, verify=str(certs.ca_pem))
    yield served, hook_server, listener, session
    served.stop()
    hook_server.stop()


@pytest.fixture
def api(env):
    served, hook_server, listener, session = env
    assert session.post(served.url + "/_sandbox/clodura/reset").status_code == 204
    listener.clear()

    class Api:
        url = served.url
        hook_base = hook_server.url + "/hooks/"
        hooks = listener

        def hook(self, token="tok-1"):
            return self.hook_base + token

        def post(self, path, body=None, key=MAX):
            return session.post(self.url + "/api/v1" + path, json=body, headers={"X-API-KEY": key})

        def get(self, path, key=MAX):
            return session.get(self.url + "/api/v1" + path, headers={"X-API-KEY": key})

        def control(self, method, path, body=None):
            return session.request(method, self.url + "/_sandbox/clodura" + path, json=body)

        def usage(self, key=MAX):
            return self.control("GET", "/usage").json()[key]

        def deliveries(self):
            return self.control("GET", "/webhooks").json()

        def wait_idle(self, timeout=5.0):
            deadline = time.monotonic() + timeout
            while self.deliveries()["pending"]:
                assert time.monotonic() < deadline, "webhooks still pending"
                time.sleep(0.01)

    return Api()


@pytest.fixture(scope="module")
def ds():
    return build_dataset()


def person_where(ds, *, known=True, catch_all=False, verdict=None):
    for p in ds.people:
        c = ds.company(p.organisation_id)
        if p.known == known and c.catch_all == catch_all and (verdict is None or p.email_verdict == verdict):
            return p
    raise AssertionError("no such person")


# -- reveal email -------------------------------------------------------------

def test_reveal_email_multi_provider_variant_and_charge(api, ds):
    p = person_where(ds, verdict=VERDICT_DELIVERABLE)
    r = api.post("/search/people/email/match", {"personId": p.person_id, "webhookUrl": api.hook("a")})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "queued" and body["trackingId"].startswith("trk_")
    [(token, payload)] = api.hooks.wait_for(lambda items: len(items) == 1)
    assert token == "a"
    assert payload["trackingId"] == body["trackingId"] and payload["type"] == "email"
    assert payload["status"] == "completed" and payload["email"] == p.email
    assert payload["emailStatus"] == "verified" and payload["personId"] == p.person_id
    cost = payload["creditsUsed"]
    assert isinstance(cost, int) and 1 <= cost <= 6
    assert len(payload["providers"]) == cost and payload["providers"][-1]["result"] == "found"
    assert all(x["result"] == "not_found" for x in payload["providers"][:-1])
    assert api.usage()["remainingCredits"] == pytest.approx(10000 - cost)
    # the tracking endpoint shows the same payload; unknown ids are 404
    assert api.get(f"/search/people/track/{body['trackingId']}").json() == payload
    assert api.get("/search/people/track/trk_nope").status_code == 404
    assert api.get(f"/search/people/track/{body['trackingId']}", key=PROSPECT).status_code == 404


def test_reveal_email_costs_are_deterministic_and_in_range(api, ds):
    people = [p for p in ds.people if p.known][:20]
    costs = []
    for p in people:
        r = api.post("/search/people/email/match", {"linkedinUrl": p.linkedin_url, "webhookUrl": api.hook()})
        assert r.status_code == 200
    api.control("POST", "/flush-webhooks")
    got = api.hooks.wait_for(lambda items: len(items) == len(people))
    costs = [payload["creditsUsed"] for _, payload in got]
    assert all(1 <= c <= 6 for c in costs) and len(set(costs)) > 1
    assert api.usage()["creditsSpent"] == pytest.approx(sum(costs))


def test_reveal_email_standard_variant_for_prospect(api, ds):
    p = person_where(ds, verdict=VERDICT_DELIVERABLE)
    c = ds.company(p.organisation_id)
    r = api.post("/search/people/email/match", {"firstName": p.first_name, "lastName": p.last_name,
                                                "companyDomain": c.domain, "webhookUrl": api.hook()}, key=PROSPECT)
    assert r.status_code == 200
    [(_, payload)] = api.hooks.wait_for(lambda items: len(items) == 1)
    assert payload["status"] == "completed" and payload["email"] == p.email
    assert payload["creditsUsed"] == {"unlock": 1, "export": 1}
    assert "providers" not in payload
    assert api.get("/credits", key=PROSPECT).json()["contactsView"] == 2


def test_reveal_email_not_found_is_free(api, ds):
    unknown = person_where(ds, known=False)
    undeliverable = person_where(ds, verdict=VERDICT_UNDELIVERABLE)
    api.post("/search/people/email/match", {"personId": unknown.person_id, "webhookUrl": api.hook("m")})
    api.post("/search/people/email/match", {"personId": undeliverable.person_id, "webhookUrl": api.hook("p")},
             key=PROSPECT)
    got = dict(api.hooks.wait_for(lambda items: len(items) == 2))
    assert got["m"]["status"] == "not_found" and got["m"]["email"] is None and got["m"]["creditsUsed"] == 0
    assert got["p"]["status"] == "not_found" and got["p"]["creditsUsed"] == {"unlock": 0, "export": 0}
    assert api.usage()["creditsSpent"] == 0 and api.usage(PROSPECT)["contactsView"] == 0


def test_reveal_email_validation(api, ds):
    p = person_where(ds)
    c = ds.company(p.organisation_id)
    bad = [
        {"personId": p.person_id},                                             # no webhookUrl
        {"personId": p.person_id, "webhookUrl": "ftp://x"},
        {"webhookUrl": api.hook()},                                            # no identifier
        {"firstName": p.first_name, "companyDomain": c.domain, "webhookUrl": api.hook()},
        {"firstName": p.first_name, "lastName": p.last_name, "companyDomain": "www." + c.domain,
         "webhookUrl": api.hook()},
        {"linkedinUrl": "https://www.linkedin.com/sales/lead/abc", "webhookUrl": api.hook()},
    ]
    assert [api.post("/search/people/email/match", b).status_code for b in bad] == [400] * len(bad)
    assert api.usage()["rejected_400"] == len(bad)
    assert api.deliveries()["pending"] == 0


def test_reveal_needs_credits_at_submission(api, ds):
    p = person_where(ds)
    api.control("POST", "/credits", {"key": MAX, "remainingCredits": 0.5})
    r = api.post("/search/people/email/match", {"personId": p.person_id, "webhookUrl": api.hook()})
    assert r.status_code == 402


# -- reveal phone -------------------------------------------------------------

def test_reveal_phone_variants(api, ds):
    known = [p for p in ds.people if p.known][:12]
    for p in known:
        r = api.post("/search/people/phone/match", {"personId": p.person_id, "revealPhoneNumberViaPartners": True,
                                                    "webhookUrl": api.hook("max")})
        assert r.status_code == 200
        api.post("/search/people/phone/match", {"personId": p.person_id, "webhookUrl": api.hook("pro")},
                 key=PROSPECT)
    api.control("POST", "/flush-webhooks")
    got = api.hooks.wait_for(lambda items: len(items) == 2 * len(known))
    multi = [x for t, x in got if t == "max"]
    standard = [x for t, x in got if t == "pro"]
    phones = {p.person_id: p.mobile_phone for p in known}
    for payload in multi:   # partners always find a number
        assert payload["status"] == "completed" and 10 <= payload["creditsUsed"] <= 20
        assert payload["phoneNumbers"][0]["number"] == phones[payload["personId"]]
        assert payload["providers"][-1]["result"] == "found"
    assert api.usage()["creditsSpent"] == pytest.approx(sum(x["creditsUsed"] for x in multi))
    found = [x for x in standard if x["status"] == "completed"]
    assert 0 < len(found) < len(standard)  # Clodura's own DB holds only some numbers
    assert all(x["creditsUsed"] == {"phone": 1, "export": 1} for x in found)
    assert all(x["creditsUsed"] == {"phone": 0, "export": 0} and x["phoneNumbers"] == []
               for x in standard if x["status"] == "not_found")
    assert api.get("/credits", key=PROSPECT).json()["directDials"] == len(found)


def test_reveal_phone_without_webhook_is_trackable(api, ds):
    p = person_where(ds)
    assert api.post("/search/people/phone/match", {"personId": p.person_id,
                                                   "revealPhoneNumberViaPartners": True}).status_code == 400
    r = api.post("/search/people/phone/match", {"linkedinUrl": p.linkedin_url})
    tid = r.json()["trackingId"]
    api.control("POST", "/flush-webhooks")
    body = api.get(f"/search/people/track/{tid}").json()
    assert body["status"] in ("completed", "not_found") and body["type"] == "phone"
    assert api.deliveries()["deliveries"] == []


# -- verify email: 202 path ------------------------------------------------

def test_deep_verification_of_catch_all_is_queued_then_webhooked(api, ds):
    p = person_where(ds, catch_all=True)
    r = api.post("/verify/email", {"email": p.email, "deepVerification": True, "webhookUrl": api.hook("v")})
    assert r.status_code == 202
    body = r.json()
    assert body["status"] == "In-progress" and body["result"] == "Pending" and body["docId"]
    assert body["email"] == p.email and body["deepVerification"] is True
    [(_, final)] = api.hooks.wait_for(lambda items: len(items) == 1)
    assert final["docId"] == body["docId"] and final["status"] == "Completed"
    assert final["result"] == deep_verdict(p.email, 0.3)
    assert final["result"] in (VERDICT_CATCH_ALL, VERDICT_DELIVERABLE)
    assert api.get(f"/verify/email/{body['docId']}").json() == final
    assert api.get("/verify/email/vrf_unknown").status_code == 404
    assert api.usage()["creditsSpent"] == pytest.approx(0.1)  # charged once, at submission


def test_polling_shows_in_progress_until_done(api, ds):
    api.control("POST", "/config", {"webhook_delay_s": 30})
    p = person_where(ds, catch_all=True)
    doc = api.post("/verify/email", {"email": p.email, "deepVerification": True}).json()["docId"]
    assert api.get(f"/verify/email/{doc}").json()["status"] == "In-progress"
    assert api.control("POST", "/flush-webhooks").json()["flushed"] == 1
    done = api.get(f"/verify/email/{doc}").json()
    assert done["status"] == "Completed" and done["result"] != "Pending"


def test_standard_catch_all_queues_only_with_webhook(api, ds):
    p = person_where(ds, catch_all=True)
    sync = api.post("/verify/email", {"email": p.email})
    assert sync.status_code == 200 and sync.json()["result"] == VERDICT_CATCH_ALL
    assert api.get(f"/verify/email/{sync.json()['docId']}").json() == sync.json()
    queued = api.post("/verify/email", {"email": p.email, "webhookUrl": api.hook()})
    assert queued.status_code == 202
    [(_, final)] = api.hooks.wait_for(lambda items: len(items) == 1)
    assert final["result"] == VERDICT_CATCH_ALL and final["deepVerification"] is False
    api.control("POST", "/config", {"catch_all_202_on_standard": False})
    assert api.post("/verify/email", {"email": p.email, "webhookUrl": api.hook()}).status_code == 200
    good = person_where(ds, verdict=VERDICT_DELIVERABLE)
    assert api.post("/verify/email", {"email": good.email, "deepVerification": True,
                                      "webhookUrl": api.hook()}).status_code == 200


def test_deep_verdict_share(ds):
    emails = [p.email for p in ds.people if p.email_verdict == VERDICT_CATCH_ALL]
    share = sum(deep_verdict(e, 0.3) == VERDICT_DELIVERABLE for e in emails) / len(emails)
    assert 0.2 < share < 0.4
    assert [deep_verdict(e, 0.3) for e in emails[:30]] == [deep_verdict(e, 0.3) for e in emails[:30]]


# -- webhook fault switches and retries -----------------------------------------

def reveal(api, ds, token):
    p = person_where(ds, verdict=VERDICT_DELIVERABLE)
    return api.post("/search/people/email/match", {"personId": p.person_id, "webhookUrl": api.hook(token)}).json()


def test_lose_never_delivers_but_result_exists(api, ds):
    api.control("POST", "/webhook-faults", {"mode": "lose"})
    tid = reveal(api, ds, "lost")["trackingId"]
    api.control("POST", "/flush-webhooks")
    api.wait_idle()
    assert api.hooks.snapshot() == []
    [entry] = api.deliveries()["deliveries"]
    assert entry["mode"] == "lose" and entry["delivered"] is False and entry["id"] == tid
    assert api.get(f"/search/people/track/{tid}").json()["status"] == "completed"
    # the switch was for one delivery only
    reveal(api, ds, "next")
    api.hooks.wait_for(lambda items: [t for t, _ in items] == ["next"])


def test_duplicate_delivers_twice(api, ds):
    api.control("POST", "/webhook-faults", {"mode": "duplicate", "times": 1})
    tid = reveal(api, ds, "dup")["trackingId"]
    got = api.hooks.wait_for(lambda items: len(items) == 2)
    api.wait_idle()  # the sim logs a delivery just after the receiver answers
    assert got[0] == got[1] and got[0][1]["trackingId"] == tid
    modes = [e["mode"] for e in api.deliveries()["deliveries"]]
    assert modes == ["duplicate", "duplicate"]
    assert api.usage()["creditsSpent"] == got[0][1]["creditsUsed"]  # charged once


def test_forged_token_replaces_last_path_segment(api, ds):
    api.control("POST", "/webhook-faults", {"mode": "forged_token"})
    reveal(api, ds, "real-token")
    [(token, payload)] = api.hooks.wait_for(lambda items: len(items) == 1)
    api.wait_idle()
    assert token != "real-token" and len(token) >= 8
    [entry] = api.deliveries()["deliveries"]
    assert entry["mode"] == "forged_token" and entry["url"].endswith("/hooks/" + token)
    assert forge_url("https://h:1/a/b/tok?x=1").startswith("https://h:1/a/b/")
    assert forge_url("https://h:1/a/b/tok?x=1").endswith("?x=1")


def test_late_holds_delivery_until_flush(api, ds):
    api.control("POST", "/webhook-faults", {"mode": "late", "late_s": 60})
    assert api.control("GET", "/webhook-faults").json() == [{"mode": "late", "times": 1, "late_s": 60.0}]
    reveal(api, ds, "late")
    assert api.control("GET", "/webhook-faults").json() == []  # used up
    assert api.deliveries()["pending"] == 1
    assert api.hooks.snapshot() == []
    assert api.control("POST", "/flush-webhooks").json() == {"flushed": 1, "pending": 0}
    assert [t for t, _ in api.hooks.snapshot()] == ["late"]


def test_non_2xx_is_retried(api, ds):
    api.hooks.fail_next = 2
    reveal(api, ds, "retry")
    api.hooks.wait_for(lambda items: len(items) == 1)
    api.wait_idle()
    log = api.deliveries()["deliveries"]
    assert [(e["attempt"], e["status_code"], e["delivered"]) for e in log] == [
        (1, 500, False), (2, 500, False), (3, 200, True)]


def test_unreachable_receiver_gives_up_after_retries(api, ds):
    api.control("POST", "/config", {"webhook_retry_delays_s": [0.01], "webhook_timeout_s": 1})
    p = person_where(ds)
    api.post("/search/people/email/match", {"personId": p.person_id, "webhookUrl": "http://127.0.0.1:9/hook"})
    deadline = time.monotonic() + 5
    while len(api.deliveries()["deliveries"]) < 2 or api.deliveries()["pending"]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    log = api.deliveries()["deliveries"]
    assert [e["attempt"] for e in log] == [1, 2] and all(e["error"] for e in log)


def test_bad_fault_mode_is_400(api):
    assert api.control("POST", "/webhook-faults", {"mode": "explode"}).status_code == 400


# -- organisation enrich ----------------------------------------------------------

def test_organisation_enrich_credits_one_to_four(api, ds):
    c = next(c for c in ds.companies if c.total_funding)
    base = api.post("/organisation/enrich", {"organisationId": c.organisation_id}).json()
    assert base["creditsUsed"] == 1
    assert base["organisationName"] == c.name and base["domain"] == c.domain
    assert base["employeeCount"] == c.employee_count and base["revenue"] == c.revenue
    assert base["organisationEmployeeSize"] == c.employee_size
    assert base["financials"]["totalFunding"] == c.total_funding
    assert "technographics" not in base and "funding" not in base and "acquisitions" not in base
    two = api.post("/organisation/enrich", {"orgLinkedinUrl": c.linkedin_url, "includeTechnographics": True})
    assert two.json()["creditsUsed"] == 2
    assert two.json()["technographics"]["technologies"] == c.technologies
    three = api.post("/organisation/enrich", {"organisationId": c.organisation_id, "includeFunding": True,
                                              "includeAcquisitions": True}).json()
    assert three["creditsUsed"] == 3 and isinstance(three["acquisitions"], list)
    assert three["funding"] and three["funding"][-1]["roundType"] == three["financials"]["lastFundingType"]
    four = api.post("/organisation/enrich", {"organisationId": c.organisation_id, "includeFunding": True,
                                             "includeAcquisitions": True, "includeTechnographics": True}).json()
    assert four["creditsUsed"] == 4
    assert api.usage()["creditsSpent"] == 1 + 2 + 3 + 4
    # deterministic
    assert api.post("/organisation/enrich", {"organisationId": c.organisation_id}).json() == base


def test_organisation_enrich_errors(api):
    assert api.post("/organisation/enrich", {}).status_code == 400
    assert api.post("/organisation/enrich", {"organisationId": "o_x", "includeFunding": "yes"}).status_code == 400
    assert api.post("/organisation/enrich", {"organisationId": "o_nope"}).status_code == 404
    assert api.usage()["creditsSpent"] == 0


def test_organisation_search_by_domain_name_and_id_is_free(api, ds):
    c = ds.companies[3]
    by_domain = api.post("/organisation/search", {"domain": c.domain.upper()}).json()
    assert [o["organisationId"] for o in by_domain["organisations"]] == [c.organisation_id]
    assert by_domain["organisations"][0]["organisationName"] == c.name
    assert by_domain["pagination"]["totalRecords"] == 1
    by_name = api.post("/organisation/search", {"organisationName": c.name.lower()}).json()
    assert [o["organisationId"] for o in by_name["organisations"]] == [c.organisation_id]
    assert api.post("/organisation/search", {"domain": "nobody-here.example"}).json()["organisations"] == []
    industry = api.post("/organisation/search", {"industry": [c.industry], "perPage": 100}).json()
    assert c.organisation_id in {o["organisationId"] for o in industry["organisations"]}
    assert all(o["industry"] == c.industry for o in industry["organisations"])
    assert api.usage()["creditsSpent"] == 0


@pytest.mark.parametrize("body", [
    {}, {"page": 1}, {"domain": "www.acme.example"}, {"domain": "dana@acme.example"},
    {"organisationId": "o_1"}, {"domain": "acme.example", "perPage": 101},
])
def test_organisation_search_refuses_bad_filters(api, body):
    assert api.post("/organisation/search", body).status_code == 400


def test_usage_counts_calls_per_endpoint(api, ds):
    c = ds.companies[0]
    api.post("/organisation/enrich", {"organisationId": c.organisation_id})
    api.post("/organisation/enrich", {"organisationId": c.organisation_id})
    api.get("/credits")
    calls = api.usage()["calls"]
    assert calls["organisation/enrich"] == 2 and calls["credits"] == 1
