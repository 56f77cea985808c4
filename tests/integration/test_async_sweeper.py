"""No job waits forever for a callback: the sweeper polls Clodura after
VERIFY_POLL_AFTER_S and gives up after VERIFY_GIVE_UP_AFTER_S, writing
"unknown" with the reason. Runs on the provider stack (short deadlines)."""
from __future__ import annotations

from crm_enrich import counters
from tests.integration.conftest import GIVE_UP_AFTER_S, final_job
from tests.integration.test_async_results import create_contact, people, states


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
