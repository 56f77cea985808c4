"""What the circuit breaker is told by each client's requests, over real
HTTPS sockets to the simulators and a real Redis: the answers that say the
provider is down count against it, others for it, no answer at all against
it; an open breaker sends nothing. Clearout's 524 (a verdict slower than the
request's timeout) is no outage; the public autocomplete, which sets no
timeout, counts its 524 as one."""
from __future__ import annotations

import socket

import pytest
import requests

from crm_enrich.providers.breaker import CircuitBreaker, CircuitOpen
from crm_enrich.providers.clearout import ClearoutClient
from crm_enrich.providers.clodura import CloduraClient
from crm_enrich.providers.company_autocomplete import CompanyAutocomplete
from crm_enrich.providers.errors import ProviderUnavailable
from crm_enrich.sandbox.common import ServedApp

TOKEN, KEY = "sandbox-clearout-token", "sandbox-clodura-key"
FAILURES = 2   # the breaker opens on the second outage answer in a row


@pytest.fixture
def sims(provider_sims):
    clearout, clodura, session = provider_sims
    assert session.post(clearout.url + "/_sandbox/clearout/reset").status_code == 204
    assert session.post(clodura.url + "/_sandbox/clodura/reset").status_code == 204
    return provider_sims


def fail_next(session: requests.Session, server: ServedApp, path: str, status: int, times: int) -> None:
    rule = {"path": path, "status": status, "times": times, "body": {"status": "failed"}}
    assert session.post(server.url + "/_sandbox/faults", json=rule).status_code == 204


def requests_seen(session: requests.Session, server: ServedApp) -> int:
    return len(session.get(server.url + "/_sandbox/log").json())


def breaker(redis_client, name: str) -> CircuitBreaker:
    return CircuitBreaker(redis_client, name, FAILURES, open_s=60)


def test_clearout_outages_open_the_breaker_and_an_open_one_sends_nothing(sims, redis_client):
    clearout, _, session = sims
    guard = breaker(redis_client, "clearout")
    client = ClearoutClient(clearout.url + "/v2", TOKEN, session=session, breaker=guard)
    fail_next(session, clearout, "/v2/email_verify/getcredits", 503, times=FAILURES)
    for _ in range(FAILURES):
        with pytest.raises(ProviderUnavailable):
            client.credits()
    assert guard.is_open()
    before = requests_seen(session, clearout)
    with pytest.raises(CircuitOpen):
        client.credits()
    assert requests_seen(session, clearout) == before


def test_a_clearout_answer_between_outages_closes_the_count(sims, redis_client):
    clearout, _, session = sims
    guard = breaker(redis_client, "clearout")
    client = ClearoutClient(clearout.url + "/v2", TOKEN, session=session, breaker=guard)
    for _ in range(FAILURES):
        fail_next(session, clearout, "/v2/email_verify/getcredits", 503, times=1)
        with pytest.raises(ProviderUnavailable):
            client.credits()
        assert client.credits().available > 0
    assert not guard.is_open()


def test_a_clearout_524_is_a_slow_verdict_not_an_outage(sims, redis_client):
    clearout, _, session = sims
    guard = breaker(redis_client, "clearout")
    client = ClearoutClient(clearout.url + "/v2", TOKEN, session=session, breaker=guard)
    for _ in range(FAILURES + 1):
        with pytest.raises(ProviderUnavailable) as slow:
            client.verify_email("someone@example.org", timeout_ms=1)   # every check outlasts 1 ms
        assert slow.value.status == 524
    assert not guard.is_open()


def test_the_autocomplete_counts_a_524_as_an_outage(sims, redis_client):
    clearout, _, session = sims
    guard = breaker(redis_client, "clearout_autocomplete")
    client = CompanyAutocomplete(clearout.url + "/public/companies/autocomplete", session=session, breaker=guard)
    fail_next(session, clearout, "/public/companies/autocomplete", 524, times=FAILURES)
    for _ in range(FAILURES):
        with pytest.raises(ProviderUnavailable):
            client.suggestions("Acme")
    assert guard.is_open()


def test_clodura_outages_open_the_breaker(sims, redis_client):
    _, clodura, session = sims
    guard = breaker(redis_client, "clodura")
    client = CloduraClient(clodura.url, KEY, session=session, breaker=guard)
    fail_next(session, clodura, "/api/v1/", 502, times=FAILURES)
    for _ in range(FAILURES):
        with pytest.raises(ProviderUnavailable):
            client.credits()
    assert guard.is_open()


def test_no_answer_counts_against_the_breaker_and_names_the_call(redis_client):
    with socket.socket() as unused:   # a port nobody listens on once closed
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    down = f"https://127.0.0.1:{port}"
    clients = [
        (ClearoutClient(down + "/v2", TOKEN, breaker=breaker(redis_client, "clearout")),
         lambda c: c.credits(), "clearout /email_verify/getcredits: ConnectionError"),
        (CompanyAutocomplete(down + "/public/companies/autocomplete", breaker=breaker(redis_client, "auto")),
         lambda c: c.suggestions("Acme"), "clearout autocomplete: ConnectionError"),
        (CloduraClient(down, KEY, breaker=breaker(redis_client, "clodura")),
         lambda c: c.credits(), "/api/v1/credits: ConnectionError"),
    ]
    for client, call, message in clients:
        for _ in range(FAILURES):
            with pytest.raises(ProviderUnavailable) as unreachable:
                call(client)
            assert str(unreachable.value) == message
        assert client.breaker.is_open()
