"""Writing back at scale: batched, correct per record, safe under faults."""
from __future__ import annotations

import os
import signal
import subprocess
import uuid

import pytest
from celery import Celery

from crm_enrich.dev.devstack import wait_for
from crm_enrich.queues import URGENT_QUEUE
from crm_enrich.salesforce.batch_queue import BatchQueue
from crm_enrich.salesforce.batches import BatchServices, queue_write
from crm_enrich.sandbox.dataset import build_dataset

COMPOSITE = "/composite/sobjects"


@pytest.fixture
def writes(stack, store):
    """Queue write items exactly as finished jobs do, from the test process."""
    sender = Celery("tests", broker=stack.redis.url)
    svc = BatchServices(store=store, salesforce=None, guard=None,
                        reads=None, writes=BatchQueue(store.r, "salesforce_writes", lease_s=8),
                        max_delay_s=2.0, resume_job=None,
                        schedule=lambda name, countdown: sender.send_task(name, countdown=countdown or None,
                                                                          queue=URGENT_QUEUE))

    def finished_job(record_id: str, changes: dict, tracked=(), urgent: bool = True, job=None) -> str:
        source = "json_event" if urgent else "rerun"
        if job is None:
            job, _ = store.create_unless_seen(f"test:{uuid.uuid4().hex}", "Contact", record_id, source, {})
        store.mark_enqueued(job.id)
        store.transition(job, "writing")
        rules = {name: "tracked" if name in tracked else "always" for name in changes}
        queue_write(svc, job.id, "Contact", record_id, changes, rules, urgent=urgent)
        return job.id

    return finished_job


def contacts(control, n: int) -> list[str]:
    return control.create_records("Contact", [{"LastName": f"Batch{i}"} for i in range(n)], fire_outbound=False)


def composite_calls(control, since: int) -> list[dict]:
    return [e for e in control.log("salesforce", since=since) if e["path"].endswith(COMPOSITE)]


def last_seq(control) -> int:
    return max([e["seq"] for e in control.log("salesforce")] or [0])


def wait_jobs_final(store, job_ids, timeout=60):
    def all_final():
        jobs = [store.get(j) for j in job_ids]
        return jobs if all(j.final for j in jobs) else None
    return wait_for(all_final, timeout, f"{len(job_ids)} jobs to be final")


def test_450_finished_jobs_are_written_with_3_collection_calls(control, store, writes):
    ids = contacts(control, 450)
    made = [store.create_unless_seen(f"test:{uuid.uuid4().hex}", "Contact", rid, "json_event", {})[0]
            for rid in ids]
    # As the read batch that resumed these jobs would: their writes are
    # awaited by name, however long queuing them takes.
    BatchQueue(store.r, "salesforce_writes").expect([job.id for job in made], 60, "urgent")
    mark = last_seq(control)
    job_ids = [writes(rid, {"Title": f"Title {i}", "Department": "Batching"}, job=job)
               for i, (rid, job) in enumerate(zip(ids, made, strict=True))]
    jobs = wait_jobs_final(store, job_ids, timeout=90)
    assert {j.state for j in jobs} == {"done"}
    assert len(composite_calls(control, mark)) == 3
    for i in (0, 199, 200, 449):
        record = control.record("Contact", ids[i])["record"]
        assert record["Title"] == f"Title {i}" and record["Department"] == "Batching"
    assert all(len(control.record("Contact", rid)["writes"]) == 1 for rid in ids[::37])


def test_per_record_results_locked_deleted_invalid(control, store, writes):
    locked, deleted, invalid, fine = contacts(control, 4)
    control.http.post(f"{control.sf}/_sandbox/salesforce/record-faults",
                      json={"id": locked, "statusCode": "UNABLE_TO_LOCK_ROW", "times": 1,
                            "message": "unable to obtain exclusive access to this record"}).raise_for_status()
    control.http.post(f"{control.sf}/_sandbox/salesforce/records/Contact/{deleted}/delete").raise_for_status()
    job_ids = [
        writes(locked, {"Title": "Locked once"}),
        writes(deleted, {"Title": "Too late"}),
        writes(invalid, {"Title": "Fine", "No_Such_Field__c": "x"}),
        writes(fine, {"Title": "Fine"}),
    ]
    jobs = dict(zip(["locked", "deleted", "invalid", "fine"], wait_jobs_final(store, job_ids), strict=True))
    assert jobs["fine"].state == "done"
    assert control.record("Contact", fine)["record"]["Title"] == "Fine"
    assert jobs["locked"].state == "done"
    assert control.record("Contact", locked)["record"]["Title"] == "Locked once"
    # The flush reads the batch's records again before writing: a deleted one is not found.
    assert (jobs["deleted"].state, jobs["deleted"].skip_reason) == ("skipped", "record_gone")
    assert jobs["invalid"].state == "failed" and "INVALID_FIELD" in jobs["invalid"].last_error
    assert "No_Such_Field__c" in jobs["invalid"].last_error


def test_a_whole_batch_refused_for_a_passing_reason_is_retried_for_every_record(control, store, writes):
    ids = contacts(control, 4)
    mark = last_seq(control)
    control.add_fault("salesforce", path="/services/data/", method="PATCH", status=503, times=1,
                      body=[{"errorCode": "SERVER_UNAVAILABLE", "message": "try again"}])
    job_ids = [writes(rid, {"Title": f"Retried {i}"}) for i, rid in enumerate(ids)]
    jobs = wait_jobs_final(store, job_ids)
    assert {j.state for j in jobs} == {"done"}  # every record of the refused batch, not only its last
    statuses = [e["status"] for e in composite_calls(control, mark)]
    assert statuses[0] == 503 and set(statuses[1:]) == {200}  # (each item's own jittered backoff)
    for i, rid in enumerate(ids):
        after = control.record("Contact", rid)
        assert after["record"]["Title"] == f"Retried {i}" and len(after["writes"]) == 1


def test_worker_killed_during_a_flush_loses_nothing_and_never_writes_a_different_value(
        stack, control, store, writes):
    ids = contacts(control, 5)
    control.add_fault("salesforce", path="/services/data/", method="PATCH", delay=3.0, times=1)
    job_ids = [writes(rid, {"Title": f"Survivor {i}"}) for i, rid in enumerate(ids)]

    wait_for(lambda: store.r.scard("batch:salesforce_writes:inflight"), 30, "a flush in flight")
    worker = stack.processes["worker"]
    for pid in subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True, text=True).stdout.split():
        os.kill(int(pid), signal.SIGKILL)

    jobs = wait_jobs_final(store, job_ids, timeout=90)
    assert {j.state for j in jobs} == {"done"}
    for i, rid in enumerate(ids):
        after = control.record("Contact", rid)
        assert after["record"]["Title"] == f"Survivor {i}"
        assert 1 <= len(after["writes"]) <= 2
        assert all(w["fields"] == {"Title": f"Survivor {i}"} for w in after["writes"])


def test_tracked_field_keeps_a_manual_edit_between_two_enrichments(stack, control, job_for):
    import requests

    person = [p for p in build_dataset().people if p.known and p.email_verdict == "Deliverable"][7]
    (rid,) = control.create_records("Contact", [{"FirstName": person.first_name, "LastName": person.last_name,
                                                 "Email": person.email}])
    assert job_for("Contact", rid).state == "done"
    first = control.record("Contact", rid)["record"]
    assert first["LinkedIn_URL__c"] == person.linkedin_url

    control.http.post(f"{control.sf}/_sandbox/salesforce/records/Contact/{rid}/edit",
                      json={"LinkedIn_URL__c": "https://www.linkedin.com/in/edited-by-hand/",
                            "Email_Verification_Status__c": "risky"}).raise_for_status()
    resp = requests.post(f"{stack.web_url}/salesforce/events", timeout=10,
                         headers={"Authorization": f"Bearer {stack.webhook_secret}"},
                         json={"object": "Contact", "eventId": uuid.uuid4().hex, "records": [{"Id": rid}]})
    assert resp.status_code == 202 and resp.json()["accepted"] == 1
    second = job_for("Contact", rid)
    assert second.id in resp.json()["jobs"] and second.state == "done"
    after = control.record("Contact", rid)["record"]
    assert after["LinkedIn_URL__c"] == "https://www.linkedin.com/in/edited-by-hand/"   # tracked: kept
    assert after["Title"] == first["Title"]                                            # fill_blank
    assert after["Email_Verification_Status__c"] == "valid"                            # always


def test_write_back_does_not_cause_a_second_enrichment(stack, control, job_for):
    control.salesforce_config(om_on_update=True)
    try:
        person = [p for p in build_dataset().people if p.known and p.email_verdict == "Deliverable"][8]
        clodura_mark = max([e["seq"] for e in control.log("clodura")] or [0])
        (rid,) = control.create_records("Contact", [{"FirstName": person.first_name,
                                                     "LastName": person.last_name, "Email": person.email}])
        first = job_for("Contact", rid)
        assert first.state == "done"

        def second_notification_handled():
            notes = [n for n in control.outbound_log()["notifications"] if n["record_id"] == rid]
            return len(notes) >= 2 and all(n["state"] == "acked" for n in notes)

        wait_for(second_notification_handled, 30, "the update's Outbound Message to be acknowledged")
        second = job_for("Contact", rid)
        assert second.id != first.id
        assert second.state == "skipped" and "own write-back" in second.last_error
    finally:
        control.salesforce_config(om_on_update=False)
    enrich = [e for e in control.log("clodura", since=clodura_mark) if e["path"] == "/api/v1/cleanup/enrich"]
    assert len(enrich) == 1
    assert len(control.record("Contact", rid)["writes"]) == 1


def test_thin_events_are_read_with_one_query_per_batch(control, job_for):
    mark = last_seq(control)
    people = [p for p in build_dataset().people if p.known and p.email_verdict == "Deliverable"][20:32]
    ids = control.create_records("Contact", [{"FirstName": p.first_name, "LastName": p.last_name,
                                              "Email": p.email} for p in people])
    for rid in ids:
        assert job_for("Contact", rid).state == "done"
    calls = control.log("salesforce", since=mark)
    queries = [e for e in calls if "/query" in e["path"]]
    writes = [e for e in calls if e["path"].endswith(COMPOSITE)]
    # 12 records: one read batch, and one write batch whose flush reads the
    # planned fields again first; two of each at worst.
    assert 2 <= len(queries) <= 4 and 1 <= len(writes) <= 2
    assert not [e for e in calls if "/sobjects/Contact/" in e["path"]]  # no per-record calls



def test_a_message_slower_to_enrich_than_the_longest_wait_is_still_written_in_one_call(control, job_for):
    """16 Contacts, each of its own company's Account, in one Outbound
    Message, with Clodura slowed so that their enrichments spread over more
    than WRITEBACK_MAX_DELAY_S (2 s here): the batches wait for the jobs
    they know are coming, not for the clock, so the Contacts are read with
    one query that brings their Accounts too, and all 32 records are written
    with one call."""
    ds = build_dataset()
    people = [p for p in ds.people if p.known and p.email_verdict == "Deliverable"][60:]
    by_company = {}
    for p in people:
        by_company.setdefault(p.organisation_id, p)
    people = list(by_company.values())[:16]
    accounts = control.create_accounts([ds.company(p.organisation_id).name for p in people])
    control.add_fault("clodura", path="/api/v1/cleanup/enrich", delay=0.5, times=-1)
    mark = last_seq(control)
    clodura_mark = max([e["seq"] for e in control.log("clodura")] or [0])
    ids = control.create_records("Contact", [
        {"FirstName": p.first_name, "LastName": p.last_name, "Email": p.email,
         "AccountId": accounts[ds.company(p.organisation_id).name]} for p in people])
    for rid in ids:
        assert job_for("Contact", rid).state == "done"
    for account_id in accounts.values():
        assert job_for("Account", account_id).state == "done"
    enriched = [e["t"] for e in control.log("clodura", since=clodura_mark) if e["path"] == "/api/v1/cleanup/enrich"]
    assert max(enriched) - min(enriched) > 2.0   # the burst outlasted the longest wait
    calls = control.log("salesforce", since=mark)
    writes = [e for e in calls if e["path"].endswith(COMPOSITE)]
    assert len(writes) == 1 and writes[0]["records"] == len(ids) + len(accounts)
    # This stack's flush reads every record again before it writes
    # (WRITEBACK_REREAD_AFTER_S=0): one query per object. Besides those, one
    # Contact query, and no read of the Accounts of their own.
    reads = sorted((e["object"], e["records"]) for e in calls if "/query" in e["path"])
    assert reads == [("Account", len(accounts)), ("Contact", len(ids)), ("Contact", len(ids))]


def set_org_usage(control, used: int, allocation: int = 15000) -> None:
    control.http.post(f"{control.sf}/_sandbox/salesforce/usage",
                      json={"used": used, "allocation": allocation}).raise_for_status()


def limits_calls(control, since: int) -> int:
    return sum(1 for e in control.log("salesforce", since=since) if e["path"].rstrip("/").endswith("/limits"))


def test_allocation_guard_holds_bulk_work_then_everything(stack, control, store, writes):
    import requests

    bulk_id, urgent_id, late_id = contacts(control, 3)
    try:
        # 85 % used: new records' writes go out, bulk work (re-runs, backfills) waits.
        set_org_usage(control, 12_750)
        wait_jobs_final(store, [writes(contacts(control, 1)[0], {"Title": "Brings the 85% reading"})])
        bulk = writes(bulk_id, {"Title": "Backfill"}, urgent=False)
        urgent = writes(urgent_id, {"Title": "New record"})
        wait_jobs_final(store, [urgent])
        assert store.get(bulk).state == "writing"
        assert control.record("Contact", bulk_id)["writes"] == []

        # 96 % used: nothing goes out, not even new records; the guard looks
        # at /limits/ now and then to see whether the count has fallen.
        set_org_usage(control, 14_400)
        wait_jobs_final(store, [writes(contacts(control, 1)[0], {"Title": "Brings the 96% reading"})])
        mark = last_seq(control)
        late = writes(late_id, {"Title": "Waits"})
        wait_for(lambda: limits_calls(control, mark) >= 1, 30, "the guard to re-check the allocation")
        assert store.get(late).state == "writing" and store.get(bulk).state == "writing"
        assert control.record("Contact", late_id)["writes"] == []
        metrics = requests.get(f"{stack.web_url}/metrics", timeout=5).text
        used_line = next(line for line in metrics.splitlines() if line.startswith("crm_enrich_salesforce_api_used "))
        assert float(used_line.split()[1]) >= 14_400

        # The allocation frees up: the next re-check sees it and everything lands.
        set_org_usage(control, 100)
        jobs = wait_jobs_final(store, [bulk, late], timeout=60)
        assert [j.state for j in jobs] == ["done", "done"]
        assert control.record("Contact", bulk_id)["record"]["Title"] == "Backfill"
        assert control.record("Contact", late_id)["record"]["Title"] == "Waits"
    finally:
        set_org_usage(control, 0)


def test_a_newer_write_absorbs_an_older_one_waiting_for_its_retry(control, store, writes):
    (rid,) = contacts(control, 1)
    control.http.post(f"{control.sf}/_sandbox/salesforce/record-faults",
                      json={"id": rid, "statusCode": "UNABLE_TO_LOCK_ROW", "times": 1,
                            "message": "unable to obtain exclusive access to this record"}).raise_for_status()
    older = writes(rid, {"Title": "Older title", "Department": "Older department"})
    delayed = "batch:salesforce_writes:delayed"
    wait_for(lambda: any(f'"{older}"' in raw for raw in store.r.zrange(delayed, 0, -1)), 30,
             "the older write to wait for its retry")
    newer = writes(rid, {"Title": "Newer title"})
    jobs = wait_jobs_final(store, [older, newer])
    assert [j.state for j in jobs] == ["done", "done"]
    record = control.record("Contact", rid)
    assert record["record"]["Title"] == "Newer title"            # the newer value is the last word
    assert record["record"]["Department"] == "Older department"  # what only the older one said is kept
    successful = [w for w in record["writes"] if w["fields"].get("Title")]
    assert successful[-1]["fields"]["Title"] == "Newer title"
