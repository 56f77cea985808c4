"""Results Clodura sends later: email reveals and 202 verifications arrive
at /clodura/callbacks/<token> and move their job on; a token that is
forged or expired, or a body that is malformed, changes nothing."""
from __future__ import annotations

import time

import requests
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from crm_enrich.dev.devstack import wait_for
from crm_enrich.flow import callbacks
from crm_enrich.sandbox.clodura import deep_verdict
from crm_enrich.sandbox.dataset import build_dataset
from tests.integration.helpers import create_contact, people, states

DATASET = build_dataset()


def deliveries(control, store, job_id: str, step: str) -> list[dict]:
    """The sandbox's webhook deliveries for one job's step."""
    pending = store.provider_data(job_id).get(callbacks.pending_field(step)) or {}
    return [d for d in control.clodura_webhooks()["deliveries"] if pending.get("id") and d["id"] == pending["id"]]


def last_job_id(store, object_type: str, record_id: str) -> str:
    return store.r.get(f"record:{object_type}:{record_id}:last_job")


def test_contact_without_email_gets_one_by_reveal_callback_and_is_verified(control, job_for, store):
    ((person, company),) = people("deliverable", 1)
    contact_id = create_contact(control, person, company, with_email=False)

    job = job_for("Contact", contact_id)
    assert job.state == "done", job.last_error
    assert "awaiting_email" in states(job)
    record = control.record("Contact", contact_id)["record"]
    assert record["Email"] == person.email
    assert record["Email_Verification_Status__c"] == "valid"
    assert record["Email_Verification_Detail__c"] == "clodura standard: Deliverable"
    assert record["Title"] == person.title
    assert [d["status_code"] for d in deliveries(control, store, job.id, "reveal_email")] == [200]


def test_catch_all_address_goes_202_then_callback_then_written(control, job_for):
    (first, company), (second, _) = people("catch_all", 2)
    mark = max([e["seq"] for e in control.log("clodura")] or [0])
    first_id = create_contact(control, first, company, with_email=True)
    job = job_for("Contact", first_id)
    assert job.state == "done", job.last_error
    assert "awaiting_verification" in states(job)
    record = control.record("Contact", first_id)["record"]
    expected = "valid" if deep_verdict(first.email, 0.3) == "Deliverable" else "catch_all"
    assert record["Email_Verification_Status__c"] == expected
    assert record["Email_Verification_Detail__c"].startswith("clodura deep: ")
    verify_calls = [e for e in control.log("clodura", since=mark) if e["path"] == "/api/v1/verify/email"]
    # A standard check learns the domain is catch-all; the deep one decides.
    assert [e["status"] for e in verify_calls] == [202, 202]

    # The domain is now known to be catch-all: the next address goes deep at once.
    mark = max(e["seq"] for e in control.log("clodura"))
    second_id = create_contact(control, second, company, with_email=True)
    assert job_for("Contact", second_id).state == "done"
    verify_calls = [e for e in control.log("clodura", since=mark) if e["path"] == "/api/v1/verify/email"]
    assert len(verify_calls) == 1


def test_callback_sent_twice_is_applied_once(control, store, job_for):
    ((person, company),) = people("deliverable", 1, skip=1)
    control.clodura_webhook_fault("duplicate")
    contact_id = create_contact(control, person, company, with_email=False)

    job = job_for("Contact", contact_id)
    assert job.state == "done", job.last_error
    wait_for(lambda: len(deliveries(control, store, job.id, "reveal_email")) == 2, 30, "both deliveries")
    assert [d["status_code"] for d in deliveries(control, store, job.id, "reveal_email")] == [200, 200]
    assert states(job).count("verifying") == 1
    after = control.record("Contact", contact_id)
    assert len(after["writes"]) == 1
    assert after["record"]["Email"] == person.email


def _pending_job(control, store, job_for):
    """A job parked for a reveal whose callback is lost (and no poll
    comes before 300 s on this stack)."""
    ((person, company),) = people("deliverable", 1, skip=2)
    control.clodura_webhook_fault("lose")
    contact_id = create_contact(control, person, company, with_email=False)

    def parked():
        job_id = last_job_id(store, "Contact", contact_id)
        job = store.get(job_id) if job_id else None
        if job and job.state == "awaiting_email":
            pending = store.provider_data(job.id).get(callbacks.pending_field("reveal_email")) or {}
            return job if pending.get("id") else None
        return None

    return wait_for(parked, 30, "a job awaiting its reveal"), person


def test_forged_expired_or_malformed_callbacks_change_nothing(stack, control, store, job_for):
    job, person = _pending_job(control, store, job_for)
    provider_id = store.provider_data(job.id)[callbacks.pending_field("reveal_email")]["id"]
    body = {"trackingId": provider_id, "type": "email", "status": "completed", "email": person.email}
    secret = stack.env["SECRET_KEY"]
    url = f"{stack.web_url}/clodura/callbacks/"

    class Backdated(TimestampSigner):
        def get_timestamp(self):
            return int(time.time()) - 10 * 86_400

    expired = URLSafeTimedSerializer(secret, salt=callbacks.SALT, signer=Backdated).dumps([job.id, "reveal_email"])
    other_key = URLSafeTimedSerializer("not-our-secret-key-at-all", salt=callbacks.SALT).dumps(
        [job.id, "reveal_email"])
    valid = URLSafeTimedSerializer(secret, salt=callbacks.SALT).dumps([job.id, "reveal_email"])
    for token in (expired, other_key, "garbage", valid + "x"):
        assert requests.post(url + token, json=body, timeout=5).status_code == 404
    assert requests.post(url + valid, data=b"not json", timeout=5).status_code == 400
    assert requests.post(url + valid, json={"status": "completed"}, timeout=5).status_code == 400
    assert requests.post(url + valid, json=[body], timeout=5).status_code == 400

    assert store.get(job.id).state == "awaiting_email"
    assert callbacks.result_field("reveal_email") not in store.provider_data(job.id)

    # The real one still works, once.
    first = requests.post(url + valid, json=body, timeout=5)
    assert first.status_code == 200 and first.json()["applied"] is True
    again = requests.post(url + valid, json=body, timeout=5)
    assert again.status_code == 200 and again.json()["applied"] is False
    done = job_for("Contact", job.record_id)
    assert done.state == "done", done.last_error
    assert control.record("Contact", job.record_id)["record"]["Email"] == person.email


def test_callback_with_a_forged_token_from_the_provider_is_refused(control, store, job_for):
    ((person, company),) = people("deliverable", 1, skip=3)
    control.clodura_webhook_fault("forged_token")
    contact_id = create_contact(control, person, company, with_email=False)
    job_id = wait_for(lambda: last_job_id(store, "Contact", contact_id), 30, "the job")
    first = wait_for(lambda: deliveries(control, store, job_id, "reveal_email"), 30, "the forged delivery")
    assert first[0]["status_code"] == 404
    assert store.get(job_id).state == "awaiting_email"
    assert callbacks.result_field("reveal_email") not in store.provider_data(job_id)
