"""The waterfall's endpoints in the simulators, over real HTTPS sockets,
with the clients that call them: Clearout's reverse lookups and
single-attribute checks, Clodura's people search. Credits, limits and
errors as docs/clearout.md and docs/clodura.md say."""
from __future__ import annotations

import pytest

from crm_enrich.providers.clearout import ClearoutClient
from crm_enrich.providers.clearout_lookup import attribute_check, reverse_lookup_email, reverse_lookup_linkedin
from crm_enrich.providers.clodura import CloduraClient
from crm_enrich.providers.clodura_search import search_people
from crm_enrich.providers.errors import ProviderRejected, ProviderUnavailable
from crm_enrich.sandbox.dataset import VERDICT_UNDELIVERABLE, build_dataset

TOKEN, KEY = "sandbox-clearout-token", "sandbox-clodura-key"
DATASET = build_dataset()
STRANGER = next(p for p in DATASET.people if not p.known and p.email_verdict == "Deliverable")
BOUNCING = next(p for p in DATASET.people if p.email_verdict == VERDICT_UNDELIVERABLE)
KNOWN = next(p for p in DATASET.people if p.known)


@pytest.fixture
def clearout(provider_sims):
    server, _, session = provider_sims
    assert session.post(server.url + "/_sandbox/clearout/reset").status_code == 204
    client = ClearoutClient(server.url + "/v2", TOKEN, session=session)
    client.usage = lambda: session.get(server.url + "/_sandbox/clearout/usage").json()  # type: ignore[attr-defined]
    client.config = lambda **c: session.post(server.url + "/_sandbox/clearout/config", json=c)  # type: ignore[attr-defined]
    return client


@pytest.fixture
def clodura(provider_sims):
    _, server, session = provider_sims
    assert session.post(server.url + "/_sandbox/clodura/reset").status_code == 204
    client = CloduraClient(server.url, KEY, session=session)
    client.spent = lambda: session.get(server.url + "/_sandbox/clodura/usage").json()[KEY]["creditsSpent"]  # type: ignore[attr-defined]
    return client


def test_reverse_lookup_finds_anyone_and_charges_4_for_a_person_2_for_a_role_0_for_nobody(clearout):
    found = reverse_lookup_email(clearout, STRANGER.email)   # unknown to Clodura, known to Clearout
    assert found["credits"] == 4
    lead = found["lead"]
    assert (lead["type"], lead["title"], lead["linkedin_url"]) == ("person", STRANGER.title, STRANGER.linkedin_url)
    assert lead["name"] == f"{STRANGER.first_name} {STRANGER.last_name}"
    company = DATASET.company(STRANGER.organisation_id)
    role = reverse_lookup_email(clearout, f"sales@{company.domain}")
    assert (role["lead"]["type"], role["lead"]["name"], role["credits"]) == ("role", None, 2)
    assert reverse_lookup_email(clearout, BOUNCING.email) == {"lead": None, "credits": 0}
    by_profile = reverse_lookup_linkedin(clearout, STRANGER.linkedin_url.upper())
    assert by_profile["lead"]["title"] == STRANGER.title
    assert reverse_lookup_linkedin(clearout, "https://www.linkedin.com/in/nobody-at-all/")["lead"] is None
    usage = clearout.usage()
    assert usage["credits_spent"] == 4 + 2 + 4
    assert usage["calls"] == {"reverse_lookup/email": 3, "reverse_lookup/linkedin": 2}


def test_reverse_lookup_refusals(clearout, provider_sims):
    server, _, session = provider_sims
    missing = session.get(server.url + "/v2/reverse_lookup/email", headers={"Authorization": TOKEN})
    assert missing.status_code == 400
    assert missing.json()["error"]["reasons"][0]["location"] == "query"
    assert "x-ratelimit-remaining" in missing.headers
    # (The client put its token on the shared session: None takes it off.)
    anonymous = session.get(server.url + "/v2/reverse_lookup/linkedin", params={"url": "x"},
                            headers={"Authorization": None})
    assert (anonymous.status_code, anonymous.json()["error"]["code"]) == (401, 1000)
    clearout.config(credits=3)   # enough for a role address, not for a person
    with pytest.raises(ProviderRejected) as refused:
        reverse_lookup_email(clearout, STRANGER.email)
    assert refused.value.status == 402
    assert clearout.usage()["available_credits"] == 3


def test_attribute_checks_answer_one_flag_for_a_credit(clearout):
    company = DATASET.company(KNOWN.organisation_id)
    assert attribute_check(clearout, "role", f"info@{company.domain}") is True
    assert attribute_check(clearout, "free", KNOWN.email) is False
    assert attribute_check(clearout, "business", KNOWN.email) is True
    assert attribute_check(clearout, "disposable", "someone@mailinator.com") is True
    assert attribute_check(clearout, "free", "free@example.com") is True   # a test address: free of charge
    usage = clearout.usage()
    assert usage["credits_spent"] == 4 and usage["calls"] == {"email/verify/<attribute>": 5}


def test_attribute_check_limits(clearout):
    clearout.config(daily_verify_limit=1)
    assert attribute_check(clearout, "role", KNOWN.email) is False
    with pytest.raises(ProviderRejected, match="daily verify limit"):   # 200, failed 1017
        attribute_check(clearout, "role", KNOWN.email)
    clearout.config(daily_verify_limit=None)
    with pytest.raises(ProviderUnavailable) as slow:   # the catch-all check outlasts its timeout: 524
        attribute_check(clearout, "catchall", KNOWN.email, timeout_ms=1)
    assert slow.value.status == 524
    clearout.config(credits=0)
    with pytest.raises(ProviderRejected) as refused:
        attribute_check(clearout, "role", KNOWN.email)
    assert refused.value.status == 402


def test_people_search_charges_per_record_and_never_gives_an_email(clodura, provider_sims):
    company = DATASET.company(KNOWN.organisation_id)
    # A loose company name (no legal form, other case) still finds the person.
    loose = company.name.rsplit(" ", 1)[0] if company.name.split()[-1] in ("Inc", "LLC", "Corp") else company.name
    found = search_people(clodura, {"firstName": KNOWN.first_name.upper(), "lastName": KNOWN.last_name,
                                    "organisationName": [loose.lower()]})
    assert found["credits"] == 1
    (person,) = found["people"]
    assert (person["personId"], person["domain"]) == (KNOWN.person_id, company.domain)
    assert "email" not in person and "phone" not in str(person).lower()
    # Clodura does not know everyone: nobody found is a 404, free.
    stranger = DATASET.company(STRANGER.organisation_id)
    assert search_people(clodura, {"firstName": STRANGER.first_name, "lastName": STRANGER.last_name,
                                   "companyDomain": [stranger.domain]}) == {"people": [], "credits": 0}
    many = search_people(clodura, {"companyDomain": [company.domain]}, per_page=3)
    assert many["credits"] == len(many["people"]) == min(3, len(DATASET.people_at(company.organisation_id)))
    assert clodura.spent() == 1 + many["credits"]

    _, server, session = provider_sims
    for bad in ({"perPage": 1}, {"page": 0, "perPage": 1}, {"page": 1, "perPage": 101},
                {"page": 1, "perPage": 1, "linkedinUrl": "https://www.linkedin.com/sales/lead/123"},
                {"page": 1, "perPage": 1, "companyDomain": [f"d{i}.test" for i in range(11)]}):
        resp = session.post(server.url + "/api/v1/search/people", json=bad, headers={"X-API-KEY": KEY})
        assert resp.status_code == 400, bad
    anonymous = session.post(server.url + "/api/v1/search/people", json={"page": 1, "perPage": 1},
                             headers={"X-API-KEY": None})
    assert anonymous.status_code == 401
