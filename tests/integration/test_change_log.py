"""The change log: every confirmed write leaves, per field, its rule,
source, provider, time, job and what the field held before, never the
value; a record's view and page show it, and a period exports as CSV
(API and command line). On the running stack: real Redis, worker, sandbox."""
from __future__ import annotations

import csv
import io
import os
import subprocess
import time
import uuid

import pytest
import requests

from crm_enrich import keys
from crm_enrich.dev.devstack import BIN
from crm_enrich.jobs.changes import CSV_COLUMNS, ChangeLog
from crm_enrich.sandbox.dataset import build_dataset

from .conftest import final_job


def auth(stack) -> dict:
    return {"Authorization": f"Bearer {stack.admin_token}"}


def person(index: int):
    return [p for p in build_dataset().people if p.known and p.email_verdict == "Deliverable"][index]


def event(stack, rid: str) -> None:
    resp = requests.post(f"{stack.web_url}/salesforce/events", timeout=10,
                         headers={"Authorization": f"Bearer {stack.webhook_secret}"},
                         json={"object": "Contact", "eventId": uuid.uuid4().hex, "records": [{"Id": rid}]})
    assert resp.status_code == 202, resp.text


def changes_by_field(view: dict, job_id: str) -> dict[str, dict]:
    return {c["field"]: c for c in view["changes"] if c["jobId"] == job_id}


def every_logged_byte(store) -> str:
    out = []
    for key in store.r.scan_iter("changes:*", count=1000):
        kind = store.r.type(key)
        if kind == "stream":
            out += [f["e"] for _id, f in store.r.xrange(key)]
        elif kind == "list":
            out += store.r.lrange(key, 0, -1)
    return "\n".join(out)


def test_each_write_is_logged_with_why_and_never_the_value(stack, control, store):
    start = time.time() - 1
    who = person(70)
    (rid,) = control.create_records("Contact", [{"FirstName": who.first_name, "LastName": who.last_name,
                                                 "Email": who.email, "Title": "Hand Title"}])
    first = final_job(store, "Contact", rid)
    assert first.state == "done"
    view = requests.get(f"{stack.web_url}/admin/records/Contact/{rid}", headers=auth(stack), timeout=10).json()
    logged = changes_by_field(view, first.id)
    # Exactly the fields the job wrote; the hand-set Title (fill_blank) was not.
    assert set(logged) == set(first.fields_written) and "Title" not in logged
    assert logged["LinkedIn_URL__c"] | {"at": 0} == {
        "at": 0, "field": "LinkedIn_URL__c", "rule": "tracked", "source": "person.linkedin_url",
        "provider": "clodura", "was": "blank", "jobId": first.id}
    assert logged["Email_Verification_Status__c"]["rule"] == "always"
    assert logged["Enriched_At__c"]["provider"] == "crm-enrich"
    assert all(start <= c["at"] <= time.time() for c in logged.values())

    # A person edits two fields; the next enrichment keeps the tracked one
    # and overwrites the `always` one: the log says which was whose.
    control.http.post(f"{control.sf}/_sandbox/salesforce/records/Contact/{rid}/edit",
                      json={"LinkedIn_URL__c": "https://www.linkedin.com/in/edited-by-hand/",
                            "Email_Verification_Status__c": "risky"}).raise_for_status()
    event(stack, rid)
    second = final_job(store, "Contact", rid)
    assert second.id != first.id and second.state == "done"
    view = requests.get(f"{stack.web_url}/admin/records/Contact/{rid}", headers=auth(stack), timeout=10).json()
    again = changes_by_field(view, second.id)
    assert "LinkedIn_URL__c" not in again
    assert again["Email_Verification_Status__c"]["was"] == "overwritten"
    assert again["Enriched_At__c"]["was"] == "ours"
    assert view["changes"][0]["jobId"] == second.id  # newest first

    # No value anywhere in the log: not the email, the profile, the title.
    record = control.record("Contact", rid)["record"]
    text = every_logged_byte(store)
    for value in (who.email, who.linkedin_url, record["Enriched_At__c"], record["Clodura_Person_Id__c"]):
        assert value and value not in text

    # The period's CSV, through the API and the command line, holds both writes.
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))
    resp = requests.get(f"{stack.web_url}/admin/changes.csv", params={"since": since}, headers=auth(stack),
                        timeout=30)
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    mine = [r for r in rows if r["record_id"] == rid]
    assert {(r["job_id"], r["field"]) for r in mine} == \
        {(first.id, f) for f in first.fields_written} | {(second.id, f) for f in second.fields_written}
    assert [r["at"] for r in rows] == sorted(r["at"] for r in rows)
    env = {**os.environ, "ADMIN_TOKEN": stack.admin_token}
    out = subprocess.run([str(BIN / "crm-enrich"), "changes", "--since", since, "--url", stack.web_url],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert {(r["job_id"], r["field"]) for r in csv.DictReader(io.StringIO(out.stdout)) if r["record_id"] == rid} \
        == {(r["job_id"], r["field"]) for r in mine}

    # The dashboard's record page.
    login = requests.post(f"{stack.web_url}/admin/login", data={"token": stack.admin_token},
                          allow_redirects=False, timeout=10)
    cookie = login.headers["Set-Cookie"].split(";")[0]
    page = requests.get(f"{stack.web_url}/admin/dashboard/records/Contact/{rid}", headers={"Cookie": cookie},
                        timeout=10)
    assert page.status_code == 200 and 'data-change="LinkedIn_URL__c"' in page.text and second.id in page.text
    assert requests.get(f"{stack.web_url}/admin/dashboard/records/Contact/{rid}", timeout=10).status_code == 401


@pytest.mark.parametrize("params, status", [
    ({}, 400), ({"since": "yesterday"}, 400), ({"since": "2030-01-01"}, 400),
    ({"since": "2025-01-02", "until": "2025-01-01"}, 400), ({"since": "2025-01-01", "x": "1"}, 400)])
def test_a_bad_period_is_refused(stack, params, status):
    resp = requests.get(f"{stack.web_url}/admin/changes.csv", params=params, headers=auth(stack), timeout=10)
    assert resp.status_code == status and "error" in resp.json()
    assert requests.get(f"{stack.web_url}/admin/changes.csv", params={"since": "2025-01-01"},
                        timeout=10).status_code == 401


def test_the_log_is_bounded_kept_90_days_and_written_once_per_job(stack):
    r = stack.redis_client()
    log = ChangeLog(r, days=90, max_per_day=1000, per_record=3)
    rid = "003" + uuid.uuid4().hex[:15]
    why = {"Title": {"rule": "fill_blank", "source": "person.title", "provider": "clodura", "was": "blank"}}
    job_ids = [uuid.uuid4().hex for _ in range(5)]
    for job_id in job_ids:
        assert log.record_write(job_id, "Contact", rid, why) == 1
    # A replayed flush of the same job adds nothing.
    assert log.record_write(job_ids[-1], "Contact", rid, why) == 0
    assert [c["job_id"] for c in log.of_record("Contact", rid)] == job_ids[:1:-1]  # the last 3, newest first
    day_key = keys.changes_of_day(time.strftime("%Y-%m-%d", time.gmtime()))
    assert 0 < r.ttl(day_key) <= 91 * 86_400 and 0 < r.ttl(keys.changes_of_record("Contact", rid)) <= 91 * 86_400
    # Entries older than the kept period are not shown, even before Redis expires them.
    old = uuid.uuid4().hex
    log.record_write(old, "Contact", rid + "x", why, at=time.time() - 91 * 86_400)
    assert log.of_record("Contact", rid + "x") == []
