"""The Clearout simulator's bulk lists over real HTTPS: a list's life over
time, what it charges, cancel, remove, the result file, and the errors."""
from __future__ import annotations

import csv
import functools
import io

import pytest
import requests

from crm_enrich.dev.devstack import wait_for
from crm_enrich.sandbox.clearout import ClearoutSimConfig, create_clearout_app
from crm_enrich.sandbox.common import ServedApp, ensure_certificates
from crm_enrich.sandbox.dataset import build_dataset

TOKEN = "sandbox-clearout-token"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    certs = ensure_certificates(tmp_path_factory.mktemp("certs"))
    app = ServedApp(create_clearout_app(ClearoutSimConfig(api_tokens=[TOKEN, "other-token"])), certs).start()
    session = requests.Session()
    session.request = functools.partial(session.request, verify=str(certs.ca_pem))  # type: ignore[method-assign]
    yield app, session
    app.stop()


@pytest.fixture
def co(served):
    app, session = served
    assert session.post(app.url + "/_sandbox/clearout/reset").status_code == 204

    class Api:
        url = app.url
        http = session

        def call(self, method, path, token=TOKEN, **kw):
            return session.request(method, self.url + "/v2" + path, headers={"Authorization": f"Bearer {token}"},
                                   **kw).json()

        def upload(self, kind, text, token=TOKEN):
            path = "/email_verify/bulk" if kind == "verify" else "/email_finder/bulk"
            return self.call("POST", path, token, files={"file": ("list.csv", text.encode(), "text/csv")})

        def config(self, **changes):
            return session.post(self.url + "/_sandbox/clearout/config", json=changes).json()

    return Api()


def progress(co, list_id, kind="verify"):
    path = "/email_verify/bulk/progress_status" if kind == "verify" else "/email_finder/bulk/progress_status"
    return co.call("GET", path, params={"list_id": list_id})["data"]


def result_rows(co, list_id, path="/download/result"):
    url = co.call("POST", path, json={"list_id": list_id})["data"]["url"]
    resp = requests.get(url, verify=co.http.request.keywords["verify"], timeout=10)
    assert resp.status_code == 200
    return list(csv.DictReader(io.StringIO(resp.text)))


def test_a_list_is_queued_runs_over_time_charges_per_row_and_completes(co):
    co.config(bulk_rows_per_s=20, bulk_start_delay_s=0.3)
    before = co.config()["credits"]
    rows = "Email,Job Id\nvalid@example.com,j1\ninvalid@example.com,j2\nada@unknown-domain.test,j3\n" \
        + "".join(f"p{i}@unknown-domain.test,x{i}\n" for i in range(37)) + "ada@unknown-domain.test,dup\n"
    list_id = co.upload("verify", rows)["data"]["list_id"]
    assert len(list_id) == 24
    assert progress(co, list_id) == {"progress_status": "queued", "percentile": 0}
    running = wait_for(lambda: (p := progress(co, list_id))["progress_status"] == "running" and p["percentile"] > 0
                       and p, 10, "the list running part way")
    assert running["percentile"] < 100
    early = co.call("POST", "/download/result", json={"list_id": list_id})
    assert early["status"] == "failed" and early["error"]["code"] == 1029   # not done yet
    wait_for(lambda: progress(co, list_id)["progress_status"] == "completed", 10, "the list completed")
    assert progress(co, list_id)["percentile"] == 100
    # 38 distinct billable addresses (the test addresses and the duplicate are free).
    assert before - co.config()["credits"] == 38
    got = {row["Job Id"]: row for row in result_rows(co, list_id)}
    assert got["j1"]["Clearout Verification Status"] == "Valid" and got["j1"]["Clearout Safe to Send"] == "Yes"
    assert got["j2"]["Clearout Verification Status"] == "Invalid"
    assert got["j3"]["Clearout Reason"] == got["dup"]["Clearout Reason"]
    assert co.call("POST", "/email_verify/list/cancel", json={"list_id": list_id})["error"]["code"] == 1116
    assert co.call("POST", "/email_verify/list/remove", json={"list_id": list_id})["status"] == "success"
    assert co.call("GET", "/email_verify/bulk/progress_status", params={"list_id": list_id})["error"]["code"] == 1029


def test_a_cancelled_list_keeps_what_it_verified_and_frees_the_rest(co):
    co.config(bulk_rows_per_s=10, bulk_start_delay_s=0)
    list_id = co.upload("verify", "Email\n" + "".join(f"p{i}@unknown-domain.test\n" for i in range(100)))["data"][
        "list_id"]
    wait_for(lambda: progress(co, list_id)["percentile"] >= 5, 10, "a few rows verified")
    assert co.call("POST", "/email_verify/list/remove", json={"list_id": list_id})["status"] == "failed"  # running
    assert co.call("POST", "/email_verify/list/cancel", json={"list_id": list_id})["status"] == "success"
    assert progress(co, list_id)["progress_status"] == "cancelled"
    rows = result_rows(co, list_id)
    cancelled = [row for row in rows if row["Clearout Reason"] == "Request cancelled"]
    assert 0 < len(cancelled) < 100 and all(row["Clearout Verification Status"] == "Unknown" for row in cancelled)
    assert co.config()["credits"] == 10000 - (100 - len(cancelled))


def test_the_outcome_switch_fails_lists_half_way(co):
    co.config(bulk_outcome="fail", bulk_rows_per_s=1000, bulk_start_delay_s=0)
    list_id = co.upload("verify", "Email\n" + "".join(f"p{i}@unknown-domain.test\n" for i in range(10)))["data"][
        "list_id"]
    wait_for(lambda: progress(co, list_id)["progress_status"] == "failed", 10, "the list failed")
    assert co.call("POST", "/download/result", json={"list_id": list_id})["error"]["code"] == 1029


def test_uploads_are_refused_as_the_contract_says(co):
    co.config(bulk_concurrency=1, bulk_rows_per_s=0.01)
    first = co.upload("verify", "Email\na@unknown-domain.test\n")["data"]["list_id"]
    busy = co.upload("verify", "Email\nb@unknown-domain.test\n")
    assert busy["status"] == "failed" and busy["error"]["code"] == 1001
    assert co.call("GET", "/email_verify/bulk/progress_status", token="other-token",
                   params={"list_id": first})["error"]["code"] == 1008   # someone else's list
    assert co.upload("finder", "Email\na@b.test\n")["error"]["code"] == 1100  # no name or domain column
    co.config(credits=0)
    assert co.upload("finder", "First Name,Domain\nAda,acme.test\n")["error"]["code"] == 1002
    missing = co.call("GET", "/email_verify/bulk/progress_status")
    assert missing["error"]["reasons"][0]["location"] == "query"
    for not_an_object in ([first], "list", 7):  # JSON, but no list id in it: a clear 400, not a 500
        resp = co.http.post(co.url + "/v2/email_verify/list/cancel", json=not_an_object,
                            headers={"Authorization": f"Bearer {TOKEN}"})
        assert resp.status_code == 400 and resp.json()["error"]["reasons"][0]["field"] == ["list_id"], resp.text


def test_a_finder_list_finds_people_and_reports_percentage(co):
    co.config(bulk_rows_per_s=1000, bulk_start_delay_s=0)
    dataset = build_dataset()
    person = next(p for p in dataset.people if p.email_verdict == "Deliverable")
    company = next(c for c in dataset.companies if c.organisation_id == person.organisation_id)
    text = (f"First Name,Last Name,Company,Domain,Job Id\n{person.first_name},{person.last_name},"
            f"{company.name},,j1\nNobody,Atall,No Such Company Ltd,,j2\n")
    list_id = co.upload("finder", text)["data"]["list_id"]
    wait_for(lambda: progress(co, list_id, "finder") == {"progress_status": "completed", "percentage": 100}, 10,
             "the finder list completed")
    got = {row["Job Id"]: row for row in result_rows(co, list_id, "/email_finder/download/result")}
    assert got["j1"]["Clearout Finder Status"] == "Found"
    assert got["j1"]["Clearout Finder Email Address"] == person.email
    assert got["j2"]["Clearout Finder Status"] == "Not Found"
    assert co.config()["credits"] == 10000 - 4
