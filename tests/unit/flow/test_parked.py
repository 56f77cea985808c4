"""Jobs held for quota or credits come back once spending may go on, and
keep what they had already paid for."""
from __future__ import annotations

import time

from crm_enrich import keys
from crm_enrich.flow.parked import check_credits, resume_parked
from crm_enrich.jobs.state import State
from crm_enrich.providers.errors import CreditsExhausted, DailyQuotaExceeded, ProviderUnavailable
from crm_enrich.providers.quota import QUOTA_UNTIL
from tests.unit.flow.harness import CONTACT_ID


def held_after_enrich(flow, error) -> str:
    """A job whose person was found (and paid for), held at verification."""
    flow.contact()
    job_id = flow.started(flow.new_job("Contact", CONTACT_ID))
    flow.clodura.fail("verify_email", error)
    flow.process(job_id)
    return job_id


def resume(flow) -> list[str]:
    resumed: list[str] = []
    resume_parked(flow.store, flow.svc.quota, resumed.append)
    return resumed


def test_a_deferred_job_waits_for_the_quota_reset_then_goes_on_without_paying_twice(flow):
    job_id = held_after_enrich(flow, DailyQuotaExceeded("/api/v1/verify/email: 409", 409, 600))
    assert flow.job(job_id).state == State.DEFERRED
    assert resume(flow) == []

    flow.store.r.set(QUOTA_UNTIL, time.time() - 1)          # the provider's day has rolled over
    flow.store.r.zadd(keys.JOBS_HELD_UNTIL, {job_id: time.time() - 1})   # and with it the job's own hold
    assert resume(flow) == [job_id]
    job = flow.job(job_id)
    assert (job.state, job.last_error) == (State.RECEIVED, None)
    assert flow.memory(job_id)["person"]["personId"] == "p_dana"

    assert flow.process(job_id) == State.WRITING
    assert flow.clodura.count("enrich_contact") == 1
    assert flow.clodura.count("verify_email") == 2


def test_a_paused_job_waits_for_credits(flow):
    job_id = held_after_enrich(flow, CreditsExhausted("/api/v1/verify/email: 402", 402))
    assert flow.job(job_id).state == State.PAUSED
    assert resume(flow) == []

    flow.clodura.remaining_credits = 1.0                    # less than a step costs
    assert check_credits(flow.svc.quota, flow.clodura) is False
    assert resume(flow) == []
    flow.clodura.remaining_credits = 500.0
    assert check_credits(flow.svc.quota, flow.clodura) is True
    assert resume(flow) == [job_id]
    assert flow.job(job_id).state == State.RECEIVED


def test_credits_are_not_checked_while_nothing_is_paused_or_when_clodura_is_down(flow):
    assert check_credits(flow.svc.quota, flow.clodura) is None
    assert flow.clodura.count("credits") == 0
    flow.svc.quota.credits_exhausted()
    flow.clodura.fail("credits", ProviderUnavailable("/api/v1/credits: 503", 503))
    assert check_credits(flow.svc.quota, flow.clodura) is None
    assert flow.svc.quota.paused_reason()
