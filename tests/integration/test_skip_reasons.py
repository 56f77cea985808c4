"""Every skipped job says why: a reason code on the job and its view, a
`job.skipped` log event naming the record, and a counter by reason."""
from __future__ import annotations

import json
import re

import requests

from crm_enrich.dev.devstack import wait_for
from crm_enrich.jobs.state import SkipReason


def skipped_count(stack, reason: str) -> float:
    text = requests.get(f"{stack.web_url}/metrics", timeout=10).text
    match = re.search(rf'^crm_enrich_jobs_skipped_total\{{reason="{reason}"\}} (\S+)$', text, re.M)
    return float(match[1]) if match else 0.0


def skip_events(stack, needle: str) -> list[dict]:
    """The job.skipped events naming `needle` (a job or record id) in every log."""
    events = []
    for path in stack.log_dir.glob("*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if '"job.skipped"' in line and needle in line:
                events.append(json.loads(line))
    return events


def job_view(stack, job_id: str) -> dict:
    resp = requests.get(f"{stack.web_url}/admin/jobs/{job_id}", timeout=10,
                        headers={"Authorization": f"Bearer {stack.admin_token}"})
    assert resp.status_code == 200
    return resp.json()


def test_an_unknown_person_is_skipped_with_reason_no_match(stack, control, job_for):
    before = skipped_count(stack, "no_match")
    (contact_id,) = control.create_records("Contact", [{"FirstName": "Nobody", "LastName": "Atall-Unknown"}])
    job = job_for("Contact", contact_id)
    assert job.state == "skipped"
    assert job.skip_reason == SkipReason.NO_MATCH
    assert job.last_error == SkipReason.NO_MATCH.text
    assert job_view(stack, job.id)["skipReason"] == "no_match"
    assert skipped_count(stack, "no_match") == before + 1
    events = wait_for(lambda: skip_events(stack, contact_id), 10, "the job.skipped log event")
    assert [(e["reason"], e["job_id"], e["object"]) for e in events] == [("no_match", job.id, "Contact")]


def test_a_record_that_is_not_there_is_skipped_with_reason_record_gone(stack, store, job_for):
    before = skipped_count(stack, "record_gone")
    missing = "003000000000404AAA"
    resp = requests.post(f"{stack.web_url}/admin/rerun", json={"object": "Contact", "ids": [missing]},
                         headers={"Authorization": f"Bearer {stack.admin_token}"}, timeout=30)
    assert resp.status_code == 202, resp.text
    job = job_for("Contact", missing)
    assert job.state == "skipped" and job.skip_reason == SkipReason.RECORD_GONE
    assert job_view(stack, job.id)["skipReason"] == "record_gone"
    assert skipped_count(stack, "record_gone") == before + 1
    # The event names the job (and the record); a busy suite's worker may take a moment to write it.
    wait_for(lambda: skip_events(stack, job.id), 30, "the job.skipped log event")


def test_a_job_that_is_not_skipped_has_no_skip_reason(stack, control, job_for):
    from crm_enrich.sandbox.dataset import build_dataset

    person = [p for p in build_dataset().people if p.known and p.email_verdict == "Deliverable"][11]
    (contact_id,) = control.create_records("Contact", [{
        "FirstName": person.first_name, "LastName": person.last_name, "Email": person.email}])
    job = job_for("Contact", contact_id)
    assert job.state == "done" and job.skip_reason is None
    assert job_view(stack, job.id)["skipReason"] is None
