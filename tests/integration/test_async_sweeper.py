"""No job waits forever for a callback: the sweeper polls Clodura after
VERIFY_POLL_AFTER_S and gives up after VERIFY_GIVE_UP_AFTER_S, writing
"unknown" with the reason. Runs on the provider stack (short deadlines)."""
from __future__ import annotations

from collections import Counter

from crm_enrich import counters
from crm_enrich.dev.devstack import wait_for
from crm_enrich.keys import QUOTA_UNTIL
from tests.integration.conftest import GIVE_UP_AFTER_S, final_job
from tests.integration.helpers import create_contact, people, states


def async_outcomes(store) -> dict[tuple[str, str], float]:
    return {(labels["step"], labels["outcome"]): value for name, labels, value in counters.read(store.r)
            if name == "async_results"}


def test_lost_callbacks_are_completed_by_polling(pcontrol, pstore):
    ((revealed, company),) = people("deliverable", 1, skip=10)
    ((catch_all, catch_all_company),) = people("catch_all", 1, skip=5)
    pcontrol.clodura_webhook_fault("lose", times=-1)
    before = async_outcomes(pstore)

    reveal_id = create_contact(pcontrol, revealed, company, with_email=False)
    verify_id = create_contact(pcontrol, catch_all, catch_all_company, with_email=True)

    job = final_job(pstore, "Contact", reveal_id)
    assert job.state == "done", job.last_error
    assert "awaiting_email" in states(job)
    assert pcontrol.record("Contact", reveal_id)["record"]["Email"] == revealed.email

    job = final_job(pstore, "Contact", verify_id)
    assert job.state == "done", job.last_error
    record = pcontrol.record("Contact", verify_id)["record"]
    assert record["Email_Verification_Detail__c"].startswith("clodura deep: ")
    assert record["Email_Verification_Status__c"] in ("valid", "catch_all")

    after = async_outcomes(pstore)
    # (The standard check before the deep one is polled too, unless another
    # test already taught the stack that this domain is catch-all.)
    for step in ("reveal_email", "verify_deep"):
        assert after.get((step, "poll"), 0) == before.get((step, "poll"), 0) + 1, step
    assert not pcontrol.clodura_webhooks()["deliveries"][-1]["delivered"]  # the callbacks really were lost


def test_verdict_that_never_comes_ends_unknown_with_the_reason(pcontrol, pstore):
    ((person, company),) = people("catch_all", 1, skip=6)
    # The verdict is held back for ten minutes: polls see it in progress.
    pcontrol.clodura_webhook_fault("late", times=-1, late_s=600)
    contact_id = create_contact(pcontrol, person, company, with_email=True)

    job = final_job(pstore, "Contact", contact_id, timeout=GIVE_UP_AFTER_S + 60)
    assert job.state == "done", job.last_error
    assert "awaiting_verification" in states(job)
    record = pcontrol.record("Contact", contact_id)["record"]
    assert record["Email_Verification_Status__c"] == "unknown"
    assert f"no result from Clodura within {GIVE_UP_AFTER_S} s" in record["Email_Verification_Detail__c"]
    outcomes = async_outcomes(pstore)
    assert outcomes.get(("verify", "gave_up"), 0) + outcomes.get(("verify_deep", "gave_up"), 0) >= 1


def verify_polls(control, since: int) -> list[dict]:
    return [e for e in control.log("clodura", since=since)
            if e["method"] == "GET" and e["path"].startswith("/api/v1/verify/email/")]


def last_seq(control) -> int:
    return max([e["seq"] for e in control.log("clodura")] or [0])


def test_an_overdue_verdict_is_polled_with_backoff_not_on_every_sweep(pcontrol, pstore):
    ((person, company),) = people("catch_all", 1, skip=30)
    pcontrol.clodura_webhook_fault("late", times=-1, late_s=600)
    mark = last_seq(pcontrol)
    contact_id = create_contact(pcontrol, person, company, with_email=True)
    job = final_job(pstore, "Contact", contact_id, timeout=GIVE_UP_AFTER_S + 60)
    assert job.state == "done", job.last_error
    # The sweeper runs every second from POLL_AFTER_S to GIVE_UP_AFTER_S (6
    # sweeps); each verification is polled at POLL_AFTER_S, 2x and 4x only.
    per_verification = Counter(e["path"] for e in verify_polls(pcontrol, mark))
    assert per_verification and max(per_verification.values()) <= 3, per_verification


def test_a_409_answer_to_a_poll_stops_calls_until_the_reset(pcontrol, pstore):
    ((person, company),) = people("catch_all", 1, skip=31)
    pcontrol.clodura_webhook_fault("late", times=-1, late_s=600)
    pcontrol.add_fault("clodura", path="/api/v1/verify/email/", method="GET", status=409,
                       body={"message": "daily quota exceeded"}, headers={"Retry-After": "3"}, times=1)
    try:
        contact_id = create_contact(pcontrol, person, company, with_email=True)
        wait_for(lambda: pstore.r.get(QUOTA_UNTIL), 30, "the 409 to be heeded: quota exhausted")
        job = final_job(pstore, "Contact", contact_id, timeout=GIVE_UP_AFTER_S + 60)
        assert job.state == "done", job.last_error
    finally:
        pcontrol.clear_faults("clodura")
        pstore.r.delete(QUOTA_UNTIL)
