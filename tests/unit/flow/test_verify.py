"""Which check runs, and the one verdict written: Clodura standard or deep,
Clearout alone or as a second opinion."""
from __future__ import annotations

import pytest

from crm_enrich.jobs.state import State
from crm_enrich.providers.clearout import ClearoutVerdict
from tests.unit.flow.harness import CONTACT_ID

CLEAROUT = {"clearout_api_token": "ct_test"}


def verified(flow, record_id: str = CONTACT_ID, email: str = "dana@acme.example") -> dict:
    flow.contact(record_id, Email=email)
    job_id = flow.started(flow.new_job("Contact", record_id))
    assert flow.advance(job_id) == State.WRITING
    return next(w["changes"] for w in flow.queued_writes() if w["job_id"] == job_id)


def test_a_catch_all_answer_is_checked_deep_and_the_domain_remembered(flow):
    flow.clodura.verdicts["dana@acme.example"] = "Risky (Catch-all)"
    changes = verified(flow)
    assert [args[:2] for args in flow.clodura.args("verify_email")] == [
        ("dana@acme.example", False), ("dana@acme.example", True)]
    assert changes["Email_Verification_Status__c"] == "catch_all"
    assert changes["Email_Verification_Detail__c"] == "clodura deep: Risky (Catch-all)"
    assert flow.spent() == pytest.approx(2 + 0.04 + 0.1)

    # The next address on the domain goes straight to the deep check.
    flow.clodura.calls.clear()
    verified(flow, "0035g00000SecondAAB", "sam@acme.example")
    assert [args[:2] for args in flow.clodura.args("verify_email")] == [("sam@acme.example", True)]


def test_never_deep_stays_standard(make_flow):
    flow = make_flow(clodura_deep_verification="never")
    flow.clodura.verdicts["dana@acme.example"] = "Risky (Catch-all)"
    assert verified(flow)["Email_Verification_Status__c"] == "catch_all"
    assert flow.clodura.count("verify_email") == 1


def test_clearout_gives_a_second_opinion_on_what_clodura_calls_risky(make_flow):
    flow = make_flow(verify_provider="clodura_then_clearout", **CLEAROUT)
    flow.clodura.verdicts["dana@acme.example"] = "Risky"
    flow.clearout.verdicts["dana@acme.example"] = ClearoutVerdict(
        verdict="invalid", provider_status="invalid", detail="406 Mailbox not Found", sub_status=406,
        safe_to_send="no", verified_at="2026-11-21T10:00:05+00:00")
    changes = verified(flow)
    assert changes["Email_Verification_Status__c"] == "invalid"
    assert changes["Email_Verification_Detail__c"] == \
        "clodura standard: Risky; then clearout: invalid (406 Mailbox not Found)"
    assert changes["Email_Verified_At__c"] == "2026-11-21T10:00:05+00:00"


def test_a_valid_clodura_verdict_needs_no_second_opinion(make_flow):
    flow = make_flow(verify_provider="clodura_then_clearout", **CLEAROUT)
    assert verified(flow)["Email_Verification_Status__c"] == "valid"
    assert flow.clearout.count("verify_email") == 0


def test_clearout_alone_spends_no_clodura_credits_on_verification(make_flow):
    flow = make_flow(verify_provider="clearout", **CLEAROUT)
    changes = verified(flow)
    assert changes["Email_Verification_Status__c"] == "valid"
    assert flow.clodura.count("verify_email") == 0
    assert flow.clearout.args("verify_email") == [("dana@acme.example", flow.svc.settings.clearout_verify_timeout_ms)]
    assert flow.spent() == 2                                 # the enrich only
