"""process_job: one owner per job (its lock), and what a step raised turned
into the job's next state."""
from __future__ import annotations

import pytest

from crm_enrich import keys
from crm_enrich.flow.run import RetryLater, give_up
from crm_enrich.jobs.state import SkipReason, State
from crm_enrich.providers.errors import (
    CreditsExhausted,
    DailyQuotaExceeded,
    ProviderRejected,
    ProviderUnavailable,
)
from crm_enrich.providers.quota import QuotaExhausted, SpendingPaused
from crm_enrich.salesforce.gateway import SalesforceFailure
from tests.unit.flow.fakes import salesforce_busy
from tests.unit.flow.harness import CONTACT_ID, RUNNER


@pytest.fixture
def ready(flow):
    """A Contact job whose record has been read: the next run calls Clodura."""
    flow.contact()
    return flow.started(flow.new_job("Contact", CONTACT_ID))


def test_a_job_runs_to_writing(flow, ready):
    assert flow.process(ready) == State.WRITING
    assert flow.job(ready).attempts == 1
    assert not flow.store.r.exists(keys.job_lock(ready))   # the lock is given back


def test_the_daily_quota_defers_the_job_and_stops_everyone_spending(flow, ready):
    flow.clodura.fail("enrich_contact", DailyQuotaExceeded("/api/v1/cleanup/enrich: 409 quota", 409, 3600))
    assert flow.process(ready) == State.DEFERRED
    job = flow.job(ready)
    assert job.last_error == "/api/v1/cleanup/enrich: 409 quota"
    assert set(flow.store.ids_in_state(State.DEFERRED)) == {ready}
    assert 3500 < flow.svc.quota.quota_resets_in() <= 3600    # Clodura's Retry-After
    with pytest.raises(QuotaExhausted):
        flow.svc.quota.reserve("enrich", "another-job")

    # Another job defers without asking Clodura at all.
    flow.contact("0035g00000SecondAAB")
    other = flow.started(flow.new_job("Contact", "0035g00000SecondAAB"))
    assert flow.process(other) == State.DEFERRED
    assert flow.clodura.count("enrich_contact") == 1


def test_exhausted_credits_pause_the_job_and_all_spending(flow, ready):
    flow.clodura.fail("enrich_contact", CreditsExhausted("/api/v1/cleanup/enrich: 402 Insufficient credits", 402))
    assert flow.process(ready) == State.PAUSED
    assert flow.job(ready).last_error == "/api/v1/cleanup/enrich: 402 Insufficient credits"
    assert flow.svc.quota.paused_reason() == "Clodura credits exhausted (402)"
    with pytest.raises(SpendingPaused):
        flow.svc.quota.reserve("verify", "another-job")


def test_our_daily_budget_pauses_the_job_before_it_spends(make_flow):
    flow = make_flow(clodura_daily_credit_budget=1)     # less than one enrich (2 credits)
    flow.contact()
    job_id = flow.started(flow.new_job("Contact", CONTACT_ID))
    assert flow.process(job_id) == State.PAUSED
    assert "daily credit budget of 1 reached" in flow.job(job_id).last_error
    assert flow.clodura.count("enrich_contact") == 0


def test_a_rejected_request_fails_the_job_with_the_reason(flow, ready):
    flow.clodura.fail("enrich_contact", ProviderRejected("/api/v1/cleanup/enrich: 422 linkedinUrl is invalid", 422))
    assert flow.process(ready) == State.FAILED
    job = flow.job(ready)
    assert job.final and job.last_error == "/api/v1/cleanup/enrich: 422 linkedinUrl is invalid"
    assert set(flow.store.ids_in_state(State.FAILED)) == {ready}
    assert flow.process(ready) == State.FAILED               # a final job is not run again
    assert flow.clodura.count("enrich_contact") == 1
    assert flow.job(ready).attempts == 1


def test_an_unavailable_provider_means_retry_later_in_the_same_state(flow, ready):
    flow.clodura.fail("enrich_contact", ProviderUnavailable("/api/v1/cleanup/enrich: 503 down", 503, 7.0))
    with pytest.raises(RetryLater) as retry:
        flow.process(ready)
    assert (retry.value.countdown, retry.value.wait) == (7.0, False)   # Retry-After, and it uses a retry
    assert retry.value.reason == "/api/v1/cleanup/enrich: 503 down"
    job = flow.job(ready)
    assert job.state == State.ENRICHING and not job.final
    assert job.last_error == "/api/v1/cleanup/enrich: 503 down"
    assert not flow.store.r.exists(keys.job_lock(ready))

    assert flow.process(ready) == State.WRITING              # the retry
    assert flow.job(ready).attempts == 2


def test_a_retryable_salesforce_failure_is_retried_and_a_permanent_one_fails(flow, ready):
    flow.salesforce.fail("describe", salesforce_busy())
    with pytest.raises(RetryLater) as retry:
        flow.process(ready)
    assert retry.value.countdown is None                     # the task's own backoff
    assert flow.job(ready).state == State.VERIFYING
    assert flow.job(ready).last_error == "SERVER_UNAVAILABLE: try again"

    flow.salesforce.fail("describe", SalesforceFailure("INSUFFICIENT_ACCESS", "no access"))
    assert flow.process(ready) == State.FAILED
    assert flow.job(ready).last_error == "INSUFFICIENT_ACCESS: no access"


def test_a_job_another_task_holds_waits_without_running(flow, ready):
    flow.store.r.set(keys.job_lock(ready), "another-task")
    with pytest.raises(RetryLater) as retry:
        flow.process(ready)
    assert retry.value.wait is True and retry.value.countdown == 2.0
    assert flow.job(ready).attempts == 0
    assert flow.clodura.calls == []
    assert flow.store.r.get(keys.job_lock(ready)) == "another-task"   # not taken from its holder


def test_a_redelivered_task_takes_over_its_own_lock(flow, ready):
    flow.store.r.set(keys.job_lock(ready), RUNNER)            # its worker died holding it
    assert flow.process(ready, runner=RUNNER) == State.WRITING


def test_a_writing_job_is_left_to_the_flush(flow, ready):
    assert flow.process(ready) == State.WRITING
    assert flow.process(ready) == State.WRITING
    assert len(flow.queued_writes()) == 1
    assert flow.clodura.count("enrich_contact") == 1
    assert flow.job(ready).attempts == 1


def test_a_missing_job_and_an_unsupported_object(flow):
    assert flow.process("no-such-job") == "missing"
    job_id = flow.new_job("Opportunity", "0065g00000OppoXAAA")
    assert flow.process(job_id) == State.SKIPPED
    job = flow.job(job_id)
    assert (job.skip_reason, job.last_error) == (
        SkipReason.UNSUPPORTED_OBJECT, "enrichment of this object is not supported yet: Opportunity")


def test_giving_up_fails_the_job_with_the_reason_once(flow, ready):
    give_up(flow.svc, ready, "/api/v1/cleanup/enrich: 503 down")
    assert flow.job(ready).state == State.FAILED
    assert flow.job(ready).last_error == "gave up after retries: /api/v1/cleanup/enrich: 503 down"
    give_up(flow.svc, ready, "again")
    assert flow.job(ready).last_error == "gave up after retries: /api/v1/cleanup/enrich: 503 down"
