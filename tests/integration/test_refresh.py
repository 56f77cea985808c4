"""Scheduled refresh: records enriched more than REFRESH_AFTER_DAYS ago are
enriched again, oldest first, a capped run at a time, within a share of the
daily budget. A stack of its own whose beat triggers every second; each
test starts with that share spent (triggers select nothing)."""
from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests

from crm_enrich import keys
from crm_enrich.dev.devstack import Stack, wait_for
from crm_enrich.field_map import value_hash
from crm_enrich.jobs.store import JobStore
from crm_enrich.operations import refresh, runs
from crm_enrich.providers import quota
from crm_enrich.sandbox.control import SandboxControl
from crm_enrich.sandbox.dataset import build_dataset
from crm_enrich.sandbox.salesforce import parse_dt

AFTER_DAYS, CAP, BUDGET, SHARE = 90, 3, 100.0, 0.5


@pytest.fixture(scope="module")
def fstack(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("refresh"), worker_concurrency=2, extra_env={
            "REFRESH_AFTER_DAYS": str(AFTER_DAYS), "REFRESH_INTERVAL_S": "1", "REFRESH_MAX_PER_RUN": str(CAP),
            "REFRESH_BUDGET_SHARE": str(SHARE), "CLODURA_DAILY_CREDIT_BUDGET": str(BUDGET)}) as stack:
        yield stack


def set_spent(store: JobStore, credits: float) -> None:
    store.r.set(keys.credits_spent("clodura", quota.today()), credits)


def wait_trigger(store: JobStore, after: float, outcome: str) -> dict:
    def seen():
        last = store.r.hgetall(refresh.LAST_KEY)
        return last if last and float(last["at"]) > after and last["outcome"] == outcome else None
    return wait_for(seen, 30, f"a refresh trigger ending {outcome}", interval=0.1)


def days_ago(days: float) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def test_old_enrichments_are_refreshed_oldest_first_and_hand_edits_are_kept(fstack):
    control, store = SandboxControl(fstack.sandbox.info), JobStore(fstack.redis_client())
    set_spent(store, BUDGET * SHARE)  # closed: the refresh share is spent
    wait_trigger(store, time.time(), "no_budget")

    people = [p for p in build_dataset().people if p.known and p.email_verdict == "Deliverable"][500:506]
    marker = f"Rf{uuid.uuid4().hex[:6]}"

    def contact(p, enriched_days_ago, linkedin):
        return {"FirstName": p.first_name, "LastName": p.last_name, "Email": p.email, "Title": "Old Title",
                "Department": marker, "LinkedIn_URL__c": linkedin,
                "Enriched_At__c": days_ago(enriched_days_ago) if enriched_days_ago is not None else None}

    old_linkedin = "https://www.linkedin.com/in/moved-on/"
    # Four enriched long ago (oldest first), one recently, one never.
    rows = [contact(people[i], 120 - i, old_linkedin) for i in range(4)]
    rows += [contact(people[4], 10, old_linkedin), contact(people[5], None, old_linkedin)]
    ids = control.create_records("Contact", rows, fire_outbound=False)
    old, recent, never = ids[:4], ids[4], ids[5]
    # We wrote the old profile URL on the first three; a person typed it on the fourth.
    for rid in old[:3]:
        store.r.hset(keys.tracked("Contact", rid), "LinkedIn_URL__c", value_hash(old_linkedin))

    start = time.time()
    set_spent(store, 0)

    def refreshed(rid):
        at = control.record("Contact", rid)["record"]["Enriched_At__c"]
        return at is not None and parse_dt(at).timestamp() >= start - 1

    wait_for(lambda: all(refreshed(rid) for rid in old), 120, "the old records to be refreshed", interval=0.3)

    run_ids = [rid for rid in reversed(store.r.lrange(refresh.RUNS_KEY, 0, -1))]
    started = [requests.get(f"{fstack.web_url}/admin/runs/{run_id}", timeout=10,
                            headers={"Authorization": f"Bearer {fstack.admin_token}"}).json() for run_id in run_ids]
    started = [run for run in started if run["createdAt"] > start - 1]
    assert [(run["kind"], run["object"], run["total"]) for run in started[:2]] == [
        ("refresh", "Contact", 3), ("refresh", "Contact", 1)]
    first = {store.get(j).record_id for j in store.r.smembers(runs.run_jobs_key(started[0]["runId"]))}
    assert first == set(old[:3])  # the oldest three first
    jobs = [store.get(j) for run in started[:2] for j in store.r.smembers(runs.run_jobs_key(run["runId"]))]
    assert {(j.source, j.state) for j in jobs} == {("refresh", "done")}

    for i, rid in enumerate(old):
        after = control.record("Contact", rid)["record"]
        assert after["Title"] == "Old Title"  # fill_blank: never overwritten
        if i < 3:  # tracked, still ours: the new value
            assert after["LinkedIn_URL__c"] == people[i].linkedin_url
        else:      # tracked, a person's: kept
            assert after["LinkedIn_URL__c"] == old_linkedin
    for rid in (recent, never):
        assert not refreshed(rid)
        assert store.r.get(f"record:Contact:{rid}:last_job") is None

    # Nothing is due any more: later triggers start nothing.
    wait_trigger(store, time.time(), "nothing_due")

    # Never while spending is paused.
    store.r.set(quota.CREDITS_PAUSED, "test pause")
    try:
        wait_trigger(store, time.time(), "spending_paused")
    finally:
        store.r.delete(quota.CREDITS_PAUSED)
