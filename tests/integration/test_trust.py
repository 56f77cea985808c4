"""Trusting the input only as far as it deserves (issue 11), on the running
system: the Outbound Message endpoint's secret URL, records always read
from Salesforce, no personal data past 24 hours, no write over a person's
edit, restricted picklists, and 15-character ids in JSON events."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid

import requests

from crm_enrich.dev.devstack import BIN, free_port, wait_for
from crm_enrich.field_map import load_field_map
from crm_enrich.flow import callbacks
from crm_enrich.flow.record import AUDIT_FIELDS, IDENTITY_FIELDS
from crm_enrich.jobs.store import JobStore
from crm_enrich.salesforce.batches import CHANGED_MEANWHILE, OTHER_EMAIL
from crm_enrich.salesforce.outbound_message import ACK
from crm_enrich.sandbox.dataset import build_dataset
from crm_enrich.sandbox.salesforce import ACCOUNT_INDUSTRIES
from tests.soap_samples import envelope, notification

DATASET = build_dataset()
COMPANIES = {c.organisation_id: c for c in DATASET.companies}
SOAP = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}


def people(count: int, offset: int):
    """Known people at companies that are not catch-all (their addresses
    verify at once), from the middle of the dataset: other modules take
    theirs from the ends."""
    chosen = [p for p in DATASET.people if p.known and p.email_verdict == "Deliverable"
              and not COMPANIES[p.organisation_id].catch_all]
    middle = len(chosen) // 2
    return [(p, COMPANIES[p.organisation_id]) for p in chosen[middle + offset:middle + offset + count]]


def fresh_ids() -> tuple[str, str]:
    tail = uuid.uuid4().hex[:12]
    return f"04l{tail}AAA", f"003{tail}AAA"


def queued_nothing(store: JobStore, notification_id: str, record_id: str) -> bool:
    return (store.r.get(f"dedupe:om:{notification_id}") is None
            and store.r.get(f"record:Contact:{record_id}:last_job") is None)


def admin_job(stack, job_id: str) -> dict:
    resp = requests.get(f"{stack.web_url}/admin/jobs/{job_id}", timeout=10,
                        headers={"Authorization": f"Bearer {stack.admin_token}"})
    resp.raise_for_status()
    return resp.json()


# 1. The endpoint's secret URL --------------------------------------------------

def test_an_outbound_message_without_the_token_is_404_and_queues_nothing(stack, store, forwarded):
    nid, rid = fresh_ids()
    body = envelope([notification(nid, rid, {"LastName": "Forger"})], org_id=stack.env["SALESFORCE_ORG_ID"])
    for path in ("/salesforce/outbound-message", "/salesforce/outbound-message/",
                 f"/salesforce/outbound-message/{'x' * 43}", f"/salesforce/outbound-message/{stack.outbound_token}x",
                 f"/salesforce/outbound-message/{stack.outbound_token[:-1]}"):
        resp = requests.post(stack.web_url + path, data=body, headers=SOAP, timeout=10)
        assert resp.status_code == 404, path
        assert "<Ack>" not in resp.text
    assert queued_nothing(store, nid, rid) and forwarded() == 0

    # The right token is accepted; a SOAP body under another content type is not.
    wrong_type = requests.post(stack.outbound_url, data=body, timeout=10,
                               headers={"Content-Type": "application/json"})
    assert wrong_type.status_code == 415 and "<Ack>" not in wrong_type.text
    assert queued_nothing(store, nid, rid) and forwarded() == 0
    soap12 = requests.post(stack.outbound_url, data=body, timeout=10,
                           headers={"Content-Type": "application/soap+xml; charset=utf-8"})
    assert soap12.status_code == 200 and soap12.text == ACK
    assert forwarded() == 1
    wait_for(lambda: store.r.get(f"dedupe:om:{nid}"), 20, "the intake task to make the job")


def test_the_token_never_reaches_a_log_line(stack):
    """gunicorn's access log (web/gunicorn_conf.py) prints the path masked;
    neither it nor any other process's log holds the token."""
    marker = uuid.uuid4().hex
    requests.post(f"{stack.outbound_url}?probe={marker}", data=b"<x/>", headers=SOAP, timeout=10)

    def access_line():
        lines = (stack.log_dir / "web.log").read_text(errors="replace").splitlines()
        return next((line for line in lines if marker in line), None)

    line = wait_for(access_line, 10, "the request's access-log line")
    assert "/salesforce/outbound-message/***" in line
    for log_file in stack.log_dir.glob("*.log"):
        assert stack.outbound_token not in log_file.read_text(errors="replace"), log_file.name


def test_allowed_networks_are_checked_against_the_client_behind_a_trusted_proxy(stack, store, forwarded):
    """A second web app, behind one trusted proxy hop, accepts Outbound
    Messages only from SALESFORCE_ALLOWED_NETWORKS."""
    port = free_port()
    env = {**stack.env, "SALESFORCE_ALLOWED_NETWORKS": "198.51.100.0/24, 2001:db8::/32", "TRUSTED_PROXY_HOPS": "1"}
    web = subprocess.Popen([str(BIN / "gunicorn"), "--workers", "1", "--bind", f"127.0.0.1:{port}",
                            "web:create_app()"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    url = f"http://127.0.0.1:{port}/salesforce/outbound-message/{stack.outbound_token}"
    try:
        wait_for(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok, 30, "the second web app")
        org = stack.env["SALESFORCE_ORG_ID"]
        outside_nid, outside_rid = fresh_ids()
        for chain in (None, "203.0.113.9", "198.51.100.7, 203.0.113.9"):  # the proxy's own, or outside
            headers = {**SOAP, **({"X-Forwarded-For": chain} if chain else {})}
            resp = requests.post(url, data=envelope([notification(outside_nid, outside_rid)], org_id=org),
                                 headers=headers, timeout=10)
            assert resp.status_code == 403 and "<Ack>" not in resp.text, chain
        assert queued_nothing(store, outside_nid, outside_rid) and forwarded() == 0

        inside_nid, inside_rid = fresh_ids()
        resp = requests.post(url, data=envelope([notification(inside_nid, inside_rid)], org_id=org), timeout=10,
                             headers={**SOAP, "X-Forwarded-For": "203.0.113.9, 198.51.100.7"})
        assert resp.status_code == 200 and resp.text == ACK
        wait_for(lambda: store.r.get(f"dedupe:om:{inside_nid}"), 20, "the intake task to make the job")
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(timeout=20)


# 2. The record is always read ---------------------------------------------------

def test_forged_field_values_are_not_trusted(stack, control, store, job_for):
    """The attack from the issue: an envelope naming a real, enriched
    Contact but carrying another person's values for every field a job
    needs. The record is read: its Title survives, and the enrichment is
    about the person the record really is."""
    (real, real_company), (forged, forged_company) = people(2, offset=0)
    (account_id,) = control.create_records("Account", [{"Name": real_company.name}], fire_outbound=False)
    (contact_id,) = control.create_records("Contact", [{
        "FirstName": real.first_name, "LastName": real.last_name, "Email": real.email, "AccountId": account_id,
        "Title": "Chief Financial Officer"}], fire_outbound=False)

    # Every field a job needs: before the fix, a message carrying them all was trusted.
    needed = IDENTITY_FIELDS["Contact"] + AUDIT_FIELDS + load_field_map().target_fields("Contact")
    forged_values = {name: None for name in needed} | {
        "FirstName": forged.first_name, "LastName": forged.last_name, "Email": forged.email,
        "AccountId": account_id, "Account.Name": forged_company.name,
        "CreatedDate": "2026-01-01T00:00:00.000Z", "LastModifiedDate": "2026-01-01T00:00:00.000Z",
        "LastModifiedById": "005000000000001AAA"}
    nid = f"04l{uuid.uuid4().hex[:12]}AAA"
    resp = requests.post(stack.outbound_url, headers=SOAP, timeout=10, data=envelope(
        [notification(nid, contact_id, forged_values)], org_id=stack.env["SALESFORCE_ORG_ID"]))
    assert resp.status_code == 200 and resp.text == ACK

    job = job_for("Contact", contact_id)
    assert job.state == "done", job.last_error
    after = control.record("Contact", contact_id)["record"]
    assert after["Title"] == "Chief Financial Officer"
    assert after["Clodura_Person_Id__c"] == real.person_id != forged.person_id
    assert after["Email"] == real.email
    assert after["LinkedIn_URL__c"] == real.linkedin_url
    # The job kept the names of the fields the message carried, not their values.
    raw = json.dumps(store.r.hgetall(f"job:{job.id}"))
    assert forged.email not in raw and forged.last_name not in raw
    assert set(job.input["fields_sent"]) == set(needed)


# 3. Nothing personal past 24 hours ---------------------------------------------

def values_of(r, key: str) -> str:
    kind = r.type(key)
    if kind == "string":
        return r.get(key) or ""
    if kind == "hash":
        return json.dumps(r.hgetall(key))
    if kind == "list":
        return json.dumps(r.lrange(key, 0, -1))
    if kind == "zset":
        return json.dumps(r.zrange(key, 0, -1))
    if kind == "set":
        return json.dumps(sorted(r.smembers(key)))
    if kind == "stream":
        return json.dumps(r.xrange(key))
    return ""


def test_no_email_or_phone_of_a_run_stays_in_redis_past_24_hours(stack, control, store, job_for):
    chosen = people(6, offset=4)
    accounts = control.create_accounts(sorted({company.name for _, company in chosen}))
    records = []
    for i, (person, company) in enumerate(chosen):
        fields = {"FirstName": person.first_name, "LastName": person.last_name, "AccountId": accounts[company.name]}
        if i % 2 == 0:
            fields["Email"] = person.email          # the others get theirs revealed
        if i % 3 == 0:
            fields["MobilePhone"] = person.mobile_phone
        records.append(fields)
    ids = control.create_records("Contact", records)
    for rid in ids:
        assert job_for("Contact", rid, timeout=90).state == "done"

    personal = set()
    for rid in ids:
        record = control.record("Contact", rid)["record"]
        personal |= {record[name] for name in ("Email", "MobilePhone") if record.get(name)}
    assert len(personal) >= 8

    offenders = []
    for key in store.r.scan_iter(count=1000):
        held = values_of(store.r, key)
        found = [value for value in personal if value in held]
        if not found:
            continue
        ttl = store.r.ttl(key)
        if ttl == -1 or ttl > 86_400:
            offenders.append((key, ttl))
    assert offenders == []


# 4. No write over a person's edit -----------------------------------------------

def test_a_field_a_person_fills_in_while_the_reveal_is_pending_is_not_overwritten(stack, control, store, job_for):
    ((person, company),) = people(1, offset=12)
    control.clodura_webhook_fault("late", times=1, late_s=8)
    (account_id,) = control.create_records("Account", [{"Name": company.name}], fire_outbound=False)
    (contact_id,) = control.create_records("Contact", [{
        "FirstName": person.first_name, "LastName": person.last_name, "AccountId": account_id}])

    def awaiting_reveal():
        job_id = store.r.get(f"record:Contact:{contact_id}:last_job")
        job = store.get(job_id) if job_id else None
        pending = store.provider_data(job.id).get(callbacks.pending_field("reveal_email")) if job else None
        return job if job and job.state == "awaiting_email" and pending and pending.get("id") else None

    job = wait_for(awaiting_reveal, 30, "the job to wait for its reveal")
    typed = f"{person.first_name.lower()}@typed-by-a-rep.example"
    control.edit_record("Contact", contact_id, {"Email": typed, "Title": "Head of Everything"})
    assert store.get(job.id).state == "awaiting_email"  # the edit came while the reveal was pending

    done = job_for("Contact", contact_id, timeout=60)
    assert done.state == "done", done.last_error
    after = control.record("Contact", contact_id)
    record = after["record"]
    assert record["Email"] == typed and record["Title"] == "Head of Everything"   # the person's values
    assert record["Clodura_Person_Id__c"] == person.person_id                    # the rest is written
    assert record["LinkedIn_URL__c"] == person.linkedin_url and record["Enriched_At__c"]
    # The verdict was about Clodura's address, not the one the record has now.
    assert record["Email_Verification_Status__c"] is None
    assert len(after["writes"]) == 1 and "Email" not in after["writes"][0]["fields"]
    skipped = {entry["field"]: entry["reason"] for entry in admin_job(stack, done.id)["fieldsSkipped"]}
    assert skipped["Email"] == CHANGED_MEANWHILE and skipped["Title"] == CHANGED_MEANWHILE
    assert skipped["Email_Verification_Status__c"] == OTHER_EMAIL


# 5. Restricted picklists ----------------------------------------------------------

def test_a_value_the_restricted_picklist_does_not_offer_is_left_out_and_named(stack, control, job_for):
    company = [c for c in DATASET.companies if c.industry == "Computer Software" and not c.catch_all][-3]
    assert company.industry not in ACCOUNT_INDUSTRIES
    (account_id,) = control.create_records("Account", [{"Name": company.name,
                                                         "Website": f"https://{company.domain}"}])
    job = job_for("Account", account_id, timeout=60)
    assert job.state == "done", job.last_error
    account = control.record("Account", account_id)["record"]
    assert account["Industry"] is None
    assert account["Clodura_Organisation_Id__c"] == company.organisation_id
    assert account["NumberOfEmployees"] == company.employee_count and account["Enriched_At__c"]
    view = admin_job(stack, job.id)
    assert "Industry" not in view["fieldsWritten"] and "NumberOfEmployees" in view["fieldsWritten"]
    assert [entry["field"] for entry in view["fieldsSkipped"]] == ["Industry"]
    assert "restricted picklist" in view["fieldsSkipped"][0]["reason"]


# 7. 15-character ids in JSON events ------------------------------------------------

def post_event(stack, record_id: str) -> requests.Response:
    return requests.post(f"{stack.web_url}/salesforce/events", timeout=10,
                         headers={"Authorization": f"Bearer {stack.webhook_secret}"},
                         json={"object": "Contact", "records": [{"Id": record_id}]})


def test_a_15_character_id_in_an_event_is_enriched_and_is_the_same_record_as_its_18(stack, control, job_for):
    ((person, company),) = people(1, offset=14)
    (account_id,) = control.create_records("Account", [{"Name": company.name}], fire_outbound=False)
    (contact_id,) = control.create_records("Contact", [{
        "FirstName": person.first_name, "LastName": person.last_name, "Email": person.email,
        "AccountId": account_id}], fire_outbound=False)
    first = post_event(stack, contact_id[:15])
    assert first.status_code == 202 and first.json()["accepted"] == 1
    again = post_event(stack, contact_id)
    assert again.status_code == 202 and again.json()["accepted"] == 0 and again.json()["duplicates"] == 1

    job = job_for("Contact", contact_id)
    assert job.id in first.json()["jobs"] and job.record_id == contact_id
    assert job.state == "done", job.last_error
    assert control.record("Contact", contact_id)["record"]["Clodura_Person_Id__c"] == person.person_id
