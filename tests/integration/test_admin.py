"""The admin API, its command line, readiness and the dashboard, against the
running stack."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests

from crm_enrich.dev.devstack import BIN, wait_for
from crm_enrich.jobs.store import JobStore
from crm_enrich.operations import operator_input
from crm_enrich.sandbox.dataset import build_dataset


def known_people(start: int, count: int):
    ds = build_dataset()
    people = [p for p in ds.people if p.known and p.email_verdict == "Deliverable"]
    return people[start:start + count]


def auth(stack) -> dict:
    return {"Authorization": f"Bearer {stack.admin_token}"}


def api(stack, method: str, path: str, **kw) -> requests.Response:
    return requests.request(method, stack.web_url + path, headers=auth(stack), timeout=30, **kw)


def jobs_total(store: JobStore) -> int:
    """Every job there is, whatever its state (a transition moves a job
    between state sets, creation adds one)."""
    return sum(store.counts_by_state().values())


def run_keys(store: JobStore) -> int:
    return sum(1 for _ in store.r.scan_iter("run:*", count=1000))


def create_contacts(control, people, **extra) -> list[str]:
    return control.create_records("Contact", [{
        "FirstName": p.first_name, "LastName": extra.get("LastName", p.last_name), "Email": p.email}
        for p in people], fire_outbound=False)


def wait_run_finished(stack, run_id: str, timeout: float = 90) -> dict:
    def finished():
        run = api(stack, "GET", f"/admin/runs/{run_id}").json()
        return run if run["status"] in ("finished", "failed") else None

    return wait_for(finished, timeout, f"run {run_id} to finish", interval=0.3)


# ---------------------------------------------------------------------------
# authentication
# ---------------------------------------------------------------------------

ADMIN_CALLS = [
    ("POST", "/admin/rerun", {"object": "Contact", "ids": ["003000000000001AAA"]}),
    ("POST", "/admin/backfill", {"object": "Contact"}),
    ("GET", f"/admin/runs/{'0' * 32}", None),
    ("GET", f"/admin/jobs/{'0' * 32}", None),
    ("GET", "/admin/records/Contact/003000000000001AAA", None),
    ("GET", "/admin/failed", None),
    ("POST", "/admin/failed/replay", {"all": True}),
    ("POST", "/admin/login-link", None),
]


@pytest.mark.parametrize("method,path,body", ADMIN_CALLS)
def test_admin_api_needs_the_token(stack, store, method, path, body):
    before = (jobs_total(store), run_keys(store))
    url = stack.web_url + path
    missing = requests.request(method, url, json=body, timeout=10)
    assert missing.status_code == 401 and missing.json()["error"]
    basic = requests.request(method, url, json=body, timeout=10, headers={"Authorization": "Basic eDp5"})
    assert basic.status_code == 401
    wrong = requests.request(method, url, json=body, timeout=10,
                             headers={"Authorization": f"Bearer {stack.admin_token}x"})
    assert wrong.status_code == 403 and wrong.json()["error"] == "invalid token"
    assert (jobs_total(store), run_keys(store)) == before


# ---------------------------------------------------------------------------
# re-run: validation, dry run, by ids, by condition
# ---------------------------------------------------------------------------

BAD_RERUNS = [
    "not json",
    [],
    {"object": "Opportunity", "ids": ["003000000000001AAA"]},
    {"object": "Contact"},
    {"object": "Contact", "ids": []},
    {"object": "Contact", "ids": ["003000000000001"] * 10_001},
    {"object": "Contact", "ids": ["003-not-an-id"]},
    {"object": "Contact", "ids": [12345]},
    {"object": "Contact", "ids": ["003000000000001AAA"], "where": "LastName = 'x'"},
    {"object": "Contact", "where": ""},
    {"object": "Contact", "where": "LastName = 'x'; DELETE"},
    {"object": "Contact", "where": "LastName = 'x' LIMIT 1"},
    {"object": "Contact", "where": "LastName = 'x' order by Id"},
    {"object": "Contact", "where": "LastName = 'unterminated"},
    {"object": "Contact", "where": 42},
    {"object": "Contact", "ids": ["003000000000001AAA"], "force": "yes"},
    {"object": "Contact", "ids": ["003000000000001AAA"], "dryRun": 1},
    {"object": "Contact", "ids": ["003000000000001AAA"], "surprise": True},
]


@pytest.mark.parametrize("body", BAD_RERUNS, ids=range(len(BAD_RERUNS)))
def test_invalid_rerun_is_refused_and_queues_nothing(stack, store, body):
    before = (jobs_total(store), run_keys(store), store.r.llen("enrich"))
    kw = {"data": body} if isinstance(body, str) else {"json": body}
    resp = api(stack, "POST", "/admin/rerun", **kw)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]
    assert (jobs_total(store), run_keys(store), store.r.llen("enrich")) == before


def test_where_may_mention_forbidden_words_inside_string_literals():
    assert operator_input.validate_where("Title = 'Head of Order Management' AND LastName != 'Limit'")
    with pytest.raises(operator_input.InvalidRequest):
        operator_input.validate_where("Title = 'x' LIMIT 5")


def test_dry_run_by_ids_estimates_and_starts_nothing(stack, store):
    before = jobs_total(store)
    ids = ["003000000000001AAA", "003000000000002AAA", "003000000000003"]
    resp = api(stack, "POST", "/admin/rerun", json={"object": "Contact", "ids": ids, "dryRun": True})
    assert resp.status_code == 200
    # No such records: a worker read them to price them, and found none.
    answer = resp.json()
    assert {k: answer[k] for k in ("records", "priced", "credits", "estimatedCredits", "needs")} == {
        "records": 3, "priced": 3, "credits": {"atLeast": 0.0, "atMost": 0.0}, "estimatedCredits": 0.0, "needs": {}}
    run = api(stack, "GET", f"/admin/runs/{answer['runId']}").json()
    assert run["dryRun"] and run["status"] == "estimated" and run["queued"] == 0
    assert jobs_total(store) == before


def test_rerun_by_ids_enriches_the_records_and_reports_progress(stack, control, store):
    people = known_people(20, 2)
    ids = create_contacts(control, people)
    assert all(not control.record("Contact", rid)["record"].get("Title") for rid in ids)

    resp = api(stack, "POST", "/admin/rerun", json={"object": "Contact", "ids": [i[:15] for i in ids]})
    assert resp.status_code == 202
    run_id = resp.json()["runId"]
    assert store.r.ttl(f"run:{run_id}") > 6 * 86_400

    run = wait_run_finished(stack, run_id)
    assert run["kind"] == "rerun" and run["object"] == "Contact"
    assert run["total"] == 2 and run["queued"] == 2 and run["jobs"] == {"done": 2}
    for person, rid in zip(people, ids, strict=True):
        assert control.record("Contact", rid)["record"]["Title"] == person.title

    # The record's and the job's view: state, steps, fields; no provider data.
    record = api(stack, "GET", f"/admin/records/Contact/{ids[0][:15]}")
    assert record.status_code == 200
    job = record.json()["lastJob"]
    assert job["source"] == "rerun" and job["state"] == "done" and job["attempts"] >= 1
    assert [s["state"] for s in job["steps"]][-1] == "done"
    assert all(isinstance(s["at"], float) for s in job["steps"])
    assert "Title" in job["fieldsWritten"]
    assert job["providerCalls"] == ["person", "verification"] and job["creditsSpent"] == 2.04
    assert job["asyncSteps"] == [{"step": "verify", "askedAt": pytest.approx(job["createdAt"], abs=120),
                                  "arrived": True}]
    assert store.r.get(f"dedupe:rerun:{run_id}:{ids[0]}") == job["id"]
    same = api(stack, "GET", f"/admin/jobs/{job['id']}")
    assert same.status_code == 200 and same.json() == job
    assert people[0].email not in same.text and people[0].title not in same.text

    assert api(stack, "GET", f"/admin/jobs/{uuid.uuid4().hex}").status_code == 404
    assert api(stack, "GET", f"/admin/runs/{uuid.uuid4().hex}").status_code == 404
    assert api(stack, "GET", "/admin/records/Contact/003000000000009AAA").status_code == 404
    assert api(stack, "GET", "/admin/records/Opportunity/003000000000009AAA").status_code == 400


def test_rerun_by_condition_reads_every_page_and_queues_each_record(stack, control, store):
    marker = f"Rerun{uuid.uuid4().hex[:8]}"
    people = known_people(22, 5)
    ids = create_contacts(control, people, LastName=marker)
    other = create_contacts(control, known_people(27, 1))  # not selected
    control.salesforce_config(query_page_size=2)  # 5 records: 3 pages
    try:
        before = (jobs_total(store), run_keys(store))
        dry = api(stack, "POST", "/admin/rerun",
                  json={"object": "Contact", "where": f"LastName = '{marker}'", "dryRun": True})
        assert dry.status_code == 200, dry.text
        priced = dry.json()
        assert priced["records"] == 5 and priced["priced"] == 5  # read over 3 pages
        assert priced["needs"]["enrich"]["records"] == 5 and priced["needs"]["verify"]["records"] == 5
        assert "reveal_email" not in priced["needs"]  # every one has an email
        assert 0 <= priced["credits"]["atLeast"] <= priced["credits"]["atMost"] == priced["estimatedCredits"]
        assert jobs_total(store) == before[0]  # a dry run makes no job

        mark = max([e["seq"] for e in control.log("salesforce")] or [0])
        resp = api(stack, "POST", "/admin/rerun",
                   json={"object": "Contact", "where": f"LastName = '{marker}'", "force": True})
        assert resp.status_code == 202
        run = wait_run_finished(stack, resp.json()["runId"])
    finally:
        control.salesforce_config(query_page_size=2000)
    assert run["status"] == "finished" and run["force"] is True
    assert run["total"] == 5 and run["queued"] == 5 and run["jobs"] == {"done": 5}
    query_more = [e for e in control.log("salesforce", since=mark) if re.search(r"/query/01g", e["path"])]
    assert len(query_more) >= 2  # pages after the first were read
    for rid in ids:
        job_id = store.r.get(f"record:Contact:{rid}:last_job")
        assert store.get(job_id).source == "rerun"
    assert store.r.get(f"record:Contact:{other[0]}:last_job") is None


def test_selection_salesforce_refuses_fails_the_run(stack, store):
    dry = api(stack, "POST", "/admin/rerun",
              json={"object": "Contact", "where": "No_Such_Field__c = 'x'", "dryRun": True})
    assert dry.status_code == 400 and "INVALID_FIELD" in dry.json()["error"]
    before = jobs_total(store)
    resp = api(stack, "POST", "/admin/rerun", json={"object": "Contact", "where": "No_Such_Field__c = 'x'"})
    assert resp.status_code == 202
    run = wait_run_finished(stack, resp.json()["runId"])
    assert run["status"] == "failed" and "INVALID_FIELD" in run["error"]
    assert jobs_total(store) == before


def test_backfill_is_a_run_of_kind_backfill(stack, control, store):
    marker = f"Backfill{uuid.uuid4().hex[:8]}"
    ids = create_contacts(control, known_people(28, 2), LastName=marker)
    resp = api(stack, "POST", "/admin/backfill", json={"object": "Contact", "where": f"LastName = '{marker}'"})
    assert resp.status_code == 202
    run = wait_run_finished(stack, resp.json()["runId"])
    assert run["kind"] == "backfill" and run["jobs"] == {"done": 2}
    assert {store.get(store.r.get(f"record:Contact:{rid}:last_job")).source for rid in ids} == {"backfill"}


# ---------------------------------------------------------------------------
# dead letters
# ---------------------------------------------------------------------------

def make_failed_job(stack, control, store, person_index: int) -> tuple[str, str]:
    """A Contact whose write-back is refused once by a validation rule."""
    (rid,) = create_contacts(control, known_people(person_index, 1))
    control.http.post(f"{control.sf}/_sandbox/salesforce/record-faults", json={
        "id": rid, "statusCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "times": 1,
        "message": "Title must be approved"}).raise_for_status()
    resp = api(stack, "POST", "/admin/rerun", json={"object": "Contact", "ids": [rid]})
    run = wait_run_finished(stack, resp.json()["runId"])
    assert run["jobs"] == {"failed": 1}
    return rid, store.r.get(f"record:Contact:{rid}:last_job")


def test_failed_jobs_are_listed_and_replayed(stack, control, store):
    rid, job_id = make_failed_job(stack, control, store, 30)
    listed = api(stack, "GET", "/admin/failed").json()
    row = next(j for j in listed["jobs"] if j["id"] == job_id)
    assert row["recordId"] == rid and "Title must be approved" in row["lastError"]
    times = [j["updatedAt"] for j in listed["jobs"]]
    assert times == sorted(times, reverse=True) and listed["count"] <= 200

    bad = api(stack, "POST", "/admin/failed/replay", json={"jobIds": ["nope"]})
    assert bad.status_code == 400
    resp = api(stack, "POST", "/admin/failed/replay", json={"jobIds": [job_id, uuid.uuid4().hex]})
    assert resp.status_code == 202
    body = resp.json()
    assert body["replayed"] == 1 and body["skipped"] == 1
    new_id = body["jobs"][job_id]
    new = wait_for(lambda: (j := store.get(new_id)) and j.final and j, 60, "the replayed job")
    assert new.state == "done" and new.source == "rerun"
    assert new.dedupe_key.startswith(f"replay:{job_id}:")
    assert control.record("Contact", rid)["record"]["Title"]
    old = api(stack, "GET", f"/admin/jobs/{job_id}").json()
    assert old["state"] == "failed" and old["replayedBy"] == new_id

    # "all" replays only the dead letters not replayed yet.
    again = api(stack, "POST", "/admin/failed/replay", json={"all": True}).json()
    assert job_id not in again["jobs"]


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------

def cli(stack, *args, token: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "ADMIN_TOKEN": token if token is not None else stack.admin_token}
    return subprocess.run([str(BIN / "crm-enrich"), *args, "--url", stack.web_url], env=env,
                          capture_output=True, text=True, timeout=60)


def test_command_line(stack, control, store):
    dry = cli(stack, "rerun", "--object", "Contact", "--ids", "003000000000001AAA,003000000000002AAA",
              "--dry-run")
    assert dry.returncode == 0 and '"records": 2' in dry.stdout and '"atMost": 0.0' in dry.stdout

    (rid,) = create_contacts(control, known_people(31, 1))
    started = cli(stack, "rerun", "--object", "Contact", "--ids", rid)
    assert started.returncode == 0, started.stderr
    run_id = re.search(r'"runId": "([0-9a-f]{32})"', started.stdout).group(1)
    wait_run_finished(stack, run_id)
    status = cli(stack, "status", "--run", run_id, "--json")
    assert status.returncode == 0 and '"done": 1' in status.stdout
    job_id = store.r.get(f"record:Contact:{rid}:last_job")
    job = cli(stack, "status", "--job", job_id, "--json")
    assert job.returncode == 0 and '"state": "done"' in job.stdout
    # Without --json, redirected: plain lines a person reads, no JSON, no colour codes.
    shown = cli(stack, "status", "--job", job_id)
    assert shown.returncode == 0 and "\x1b[" not in shown.stdout and "{" not in shown.stdout
    assert re.search(r"^  state +done$", shown.stdout, re.M), shown.stdout
    assert re.search(rf"^  record +Contact {rid}$", shown.stdout, re.M), shown.stdout
    run_shown = cli(stack, "status", "--run", run_id)
    assert run_shown.returncode == 0 and f"Run {run_id}" in run_shown.stdout

    failed = cli(stack, "failed")
    assert failed.returncode == 0 and re.search(r"^Failed jobs: \d+$", failed.stdout, re.M), failed.stdout
    assert cli(stack, "status", "--job", uuid.uuid4().hex).returncode == 1
    wrong = cli(stack, "failed", token="x" * 20)
    assert wrong.returncode == 1 and "invalid token" in wrong.stdout
    bad = cli(stack, "rerun", "--object", "Contact", "--where", "LastName = 'x' LIMIT 1")
    assert bad.returncode == 1 and "LIMIT" in bad.stdout
    ready = cli(stack, "status")
    assert ready.returncode == 0 and "ready" in ready.stdout


# ---------------------------------------------------------------------------
# readiness: the worker heartbeat
# ---------------------------------------------------------------------------

def test_readyz_reports_the_worker_heartbeat(stack, store):
    ready = requests.get(f"{stack.web_url}/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json()["worker"] == "ok"
    # The heartbeat comes back by itself (Celery's event heartbeat and the
    # task beat schedules every 15 s).
    store.r.delete("worker:heartbeat")
    wait_for(lambda: store.r.get("worker:heartbeat"), 40, "a new worker heartbeat", interval=0.5)
    assert requests.get(f"{stack.web_url}/readyz", timeout=5).status_code == 200


def test_readyz_fails_without_a_worker_heartbeat(stack):
    """A web app on a Redis database no worker uses is not ready, and says why."""
    from crm_enrich.settings import load_settings
    from web import create_app

    base = stack.redis.url.rstrip("/")
    url = re.sub(r"/\d+$", "", base) + "/9"
    env_settings = {k.lower(): v for k, v in stack.env.items()
                    if k in ("PUBLIC_BASE_URL", "CLODURA_API_KEY", "CLODURA_BASE_URL", "SALESFORCE_LOGIN_URL",
                             "SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET", "SALESFORCE_ORG_ID",
                             "SALESFORCE_WEBHOOK_SECRET", "SALESFORCE_OUTBOUND_TOKEN", "ADMIN_TOKEN", "SECRET_KEY")}
    app = create_app(load_settings(**{**env_settings, "redis_url": url}))
    store = app.extensions["crm_enrich"].store
    store.r.delete("worker:heartbeat")
    client = app.test_client()
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.json["redis"] == "ok" and "heartbeat" in resp.json["worker"]
    store.r.set("worker:heartbeat", f"{time.time()} test", ex=120)
    try:
        assert client.get("/readyz").status_code == 200
    finally:
        store.r.delete("worker:heartbeat")


# ---------------------------------------------------------------------------
# dashboard
# ---------------------------------------------------------------------------

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


def session_cookie(stack) -> str:
    resp = requests.post(f"{stack.web_url}/admin/login", data={"token": stack.admin_token},
                         allow_redirects=False, timeout=10)
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/admin")
    set_cookie = resp.headers["Set-Cookie"]
    assert "Secure" in set_cookie and "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    return set_cookie.split(";")[0]  # name=value


def dashboard_html(stack, cookie: str) -> str:
    # Sent by hand: the cookie is Secure, and requests keeps those for HTTPS.
    resp = requests.get(f"{stack.web_url}/admin", headers={"Cookie": cookie}, timeout=10)
    assert resp.status_code == 200
    return resp.text


def state_counts(html: str) -> dict[str, int]:
    return {m[0]: int(m[1]) for m in re.findall(r'data-state="(\w+)"><td>\w+</td><td class="n">(\d+)</td>', html)}


def test_dashboard_login_and_session(stack):
    anonymous = requests.get(f"{stack.web_url}/admin", timeout=10)
    assert anonymous.status_code == 200 and 'name="token"' in anonymous.text
    assert "Jobs by state" not in anonymous.text
    wrong = requests.post(f"{stack.web_url}/admin/login", data={"token": "x" * 30}, timeout=10,
                          allow_redirects=False)
    assert wrong.status_code == 403 and "Set-Cookie" not in wrong.headers
    forged = requests.get(f"{stack.web_url}/admin", headers={"Cookie": "crm_enrich_admin=eyJhZG1pbiI6dHJ1ZX0.x.y"},
                          timeout=10)
    assert "Jobs by state" not in forged.text

    cookie = session_cookie(stack)
    html = dashboard_html(stack, cookie)
    for part in ("Throughput, last hour", "Jobs by state", "Queue depths", "Salesforce daily API allocation",
                 "Credits today", "Clodura rate-limit headroom", "Recent failures"):
        assert part in html
    assert set(state_counts(html)) == set(JobStore(stack.redis_client()).counts_by_state())

    # A one-time link works once.
    link = api(stack, "POST", "/admin/login-link").json()["url"]
    first = requests.get(stack.web_url + link, allow_redirects=False, timeout=10)
    assert first.status_code == 303 and "crm_enrich_admin=" in first.headers["Set-Cookie"]
    assert requests.get(stack.web_url + link, allow_redirects=False, timeout=10).status_code == 403


def test_dashboard_shows_live_numbers_and_replays_with_csrf(stack, control, store):
    rid, job_id = make_failed_job(stack, control, store, 32)
    done_ids = create_contacts(control, known_people(33, 1))
    run = wait_run_finished(stack, api(stack, "POST", "/admin/rerun",
                                       json={"object": "Contact", "ids": done_ids}).json()["runId"])
    assert run["jobs"] == {"done": 1}
    cookie = session_cookie(stack)

    def consistent():
        html = dashboard_html(stack, cookie)
        return html if state_counts(html) == store.counts_by_state() else None

    html = wait_for(consistent, 30, "the dashboard to show the store's counts", interval=0.5)
    assert state_counts(html)["failed"] >= 1 and f'data-job="{job_id}"' in html
    done_last_hour = int(re.search(r"jobs done per 5 minutes: (\d+) in all", html).group(1))
    assert done_last_hour >= 1
    assert re.search(r'data-queue="enrich"><td>[^<]*<code>enrich</code></td><td class="n">\d+', html)
    csrf = re.search(r'name="csrf" value="([^"]+)"', html).group(1)

    replay_url = f"{stack.web_url}/admin/dashboard/replay"
    no_csrf = requests.post(replay_url, data={"job": job_id}, headers={"Cookie": cookie},
                            allow_redirects=False, timeout=10)
    assert no_csrf.status_code == 403
    no_session = requests.post(replay_url, data={"job": job_id, "csrf": csrf}, allow_redirects=False, timeout=10)
    assert no_session.status_code == 401
    assert store.r.hget(f"job:{job_id}", "replayed_by") is None

    ok = requests.post(replay_url, data={"job": job_id, "csrf": csrf, "selected": "1"},
                       headers={"Cookie": cookie}, allow_redirects=False, timeout=10)
    assert ok.status_code == 303 and "Replayed+1" in ok.headers["Location"]
    new_id = store.r.hget(f"job:{job_id}", "replayed_by")
    assert new_id
    assert wait_for(lambda: (j := store.get(new_id)) and j.final and j, 60, "the replayed job").state == "done"


def chromium(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("the dashboard test needs Debian's chromium: scripts/bootstrap.sh installs it when run "
                    "as root; otherwise run `apt-get install chromium` once")
    profile = tempfile.mkdtemp(dir=tmp_path, prefix="chromium-")
    return subprocess.run([
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--window-size=1280,900", *args],
        capture_output=True, text=True, timeout=90)


def test_dashboard_in_headless_chromium(stack, store, tmp_path):
    """The browser logs in through a one-time link (obtained with the admin
    token; the token itself never goes into a URL), is redirected to the
    dashboard with its session cookie, and renders it."""
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    link = api(stack, "POST", "/admin/login-link").json()["url"]
    result = chromium(f"--screenshot={shot}", stack.web_url + link, tmp_path=tmp_path)
    assert shot.exists(), result.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000

    # The same flow, DOM dumped: the browser's session sees the job counts.
    link = api(stack, "POST", "/admin/login-link").json()["url"]
    dom = chromium("--dump-dom", stack.web_url + link, tmp_path=tmp_path).stdout
    assert "Jobs by state" in dom, dom[:500]
    shown = state_counts(dom)
    assert set(shown) == set(store.counts_by_state())
    assert shown["done"] >= 1
