"""Change Data Capture as the way in (SALESFORCE_INGEST=cdc): the real
subscriber process follows the sandbox's Pub/Sub API server over TLS; the
org sends no Outbound Messages. Records created while it runs are enriched
and written back; a SIGKILL and a restart miss nothing and enrich nothing
twice; our own write-backs' change events make no job; gap events are
read through; a subscriber down longer than the retention has the
reconciliation cover the gap."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import requests

from crm_enrich import counters, keys
from crm_enrich.dev.devstack import Stack, wait_for
from crm_enrich.jobs.store import JobStore
from crm_enrich.sandbox.control import SandboxControl
from crm_enrich.sandbox.dataset import build_dataset
from tests.integration.conftest import final_job
from tests.integration.helpers import UNMASKED_EMAIL, calls_to, contacts_for, doctor, log_mark

CONTACTS = "/data/ContactChangeEvent"
# A job's plan older than this is read again before its write (production: 30 s).
REREAD_AFTER_S = 10
QUERY, COMPOSITE = "/query", "/composite/sobjects"
PERSON_ENRICH = "/api/v1/cleanup/enrich"   # Clodura's person enrich: one call per person enriched


@pytest.fixture(scope="module")
def cdc_stack(tmp_path_factory):
    # Small batches, so a kill lands mid-stream; short reconnection waits;
    # UPDATEs of input fields taken too (so our own write-back of a revealed
    # Email would loop without the commitUser check); no scheduled
    # reconciliation (the subscriber's own trigger is tested).
    with Stack(tmp_path_factory.mktemp("cdc"), worker_concurrency=2, extra_env={
            "SALESFORCE_INGEST": "cdc", "SALESFORCE_CDC_BATCH_SIZE": "5", "SALESFORCE_CDC_RETRY_MAX_S": "1",
            "SALESFORCE_CDC_UPDATES": "true", "WRITEBACK_REREAD_AFTER_S": str(REREAD_AFTER_S),
            "RECONCILE_INTERVAL_S": "0", "SALESFORCE_USAGE_RECHECK_S": "2"}) as running:
        yield running


@pytest.fixture
def control(cdc_stack):
    ctl = SandboxControl(cdc_stack.sandbox.info)
    yield ctl
    ctl.clear_pubsub_faults()
    ctl.clear_faults("salesforce")


@pytest.fixture
def store(cdc_stack):
    return JobStore(cdc_stack.redis_client())


DATASET = build_dataset()
PEOPLE = [p for p in DATASET.people if p.known and p.email_verdict == "Deliverable"]
_next_person = iter(PEOPLE)


def create_contacts(control, n: int) -> list[str]:
    return contacts_for(control, [next(_next_person) for _ in range(n)])


def clodura_mark(control) -> int:
    return log_mark(control, "clodura")


def person_enrich_calls(control, since: int) -> int:
    return sum(1 for e in control.log("clodura", since=since) if e["path"] == PERSON_ENRICH)


def cdc_dedupe_keys(store, record_id: str) -> list[str]:
    return list(store.r.scan_iter(match=f"dedupe:cdc:*:{record_id}", count=1000))


def received(store) -> float:
    return sum(v for name, labels, v in counters.read(store.r)
               if name == "records_received" and labels.get("source") == "cdc")


def duplicates(store) -> float:
    return float(store.r.hget(keys.METRICS_COUNTERS, "duplicates_dropped|source=cdc") or 0)


def queued_up_to(control, store, record_ids: list[str], timeout: float = 60) -> None:
    """Wait until the subscriber has stored a replay id at or past every
    event of these records: everything before is handled (queued or skipped)."""
    events = control.pubsub_events()["events"]
    last = max(int(e["replay_id"], 16) for e in events if set(e["header"]["recordIds"]) & set(record_ids))

    def stored() -> int:
        value = store.r.hget(keys.cdc_replay(CONTACTS), "replay_id") or ""
        return int(value, 16) if value not in ("", "EARLIEST") else -1

    wait_for(lambda: stored() >= last, timeout, "the subscriber to store a replay id past the records' events")


def test_records_created_while_the_subscriber_runs_are_enriched_and_written_back(control, store):
    mark = clodura_mark(control)
    ids = create_contacts(control, 3)
    for rid in ids:
        job = final_job(store, "Contact", rid)
        assert job.state == "done", job.last_error
        assert job.source == "cdc"
        assert control.record("Contact", rid)["record"]["Enriched_At__c"]
    assert person_enrich_calls(control, mark) == 3
    # The org sent no Outbound Message: every job came from a change event.
    assert not control.outbound_log()["deliveries"]
    calls = control.pubsub_log()
    # Flow control: never more asked for, nor sent, than one batch (5).
    assert {e["num_requested"] for e in calls if "num_requested" in e} == {5}
    assert max(e["events"] for e in calls if e["rpc"] == "FetchResponse") <= 5
    # Each schema fetched once (this test is the stack's first, before any restart).
    fetched = Counter(e["schema_id"] for e in calls if e["rpc"] == "GetSchema")
    assert fetched and set(fetched.values()) == {1}


def test_a_created_record_is_written_back_from_its_events_values_without_a_read(control, store):
    mark = log_mark(control, "salesforce")
    (rid,) = create_contacts(control, 1)
    job = final_job(store, "Contact", rid)
    assert job.state == "done", job.last_error
    # The CREATE carried every field the job reads (a null one as null):
    # no query, one write, and the blank Title filled.
    assert calls_to(control, "salesforce", mark, QUERY) == []
    assert len(calls_to(control, "salesforce", mark, COMPOSITE)) == 1
    assert control.record("Contact", rid)["record"]["Title"]


def test_a_create_replayed_after_downtime_is_read_again_before_its_write(cdc_stack, control, store):
    """Its values are as of the commit: a person may have changed the
    record since, and their edit is never overwritten."""
    cdc_stack.stop_process("events")
    (rid,) = create_contacts(control, 1)
    (event,) = [e for e in control.pubsub_events()["events"] if rid in e["header"]["recordIds"]]
    control.edit_record("Contact", rid, {"Title": "Keeper of the Tea"})
    committed_at = event["header"]["commitTimestamp"] / 1000
    wait_for(lambda: time.time() - committed_at > REREAD_AFTER_S, REREAD_AFTER_S + 5,
             "the event's values to be older than a plan may be when written")
    mark = log_mark(control, "salesforce")
    cdc_stack.start_events()
    job = final_job(store, "Contact", rid)
    assert job.state == "done", job.last_error
    assert control.record("Contact", rid)["record"]["Title"] == "Keeper of the Tea"
    (read,) = calls_to(control, "salesforce", mark, QUERY)   # the write's re-read
    assert read["object"] == "Contact"


def test_our_own_write_back_of_a_revealed_email_makes_no_job(control, store):
    person = next(p for p in reversed(PEOPLE) if not DATASET.company(p.organisation_id).catch_all)
    (account_id,) = control.create_records("Account", [{"Name": DATASET.company(person.organisation_id).name}])
    (rid,) = control.create_records("Contact", [{"FirstName": person.first_name, "LastName": person.last_name,
                                                 "AccountId": account_id}])
    job = final_job(store, "Contact", rid)
    assert job.state == "done", job.last_error
    record = control.record("Contact", rid)["record"]
    assert record["Email"] == person.email
    # The write-back is an UPDATE of Email, an input field, by the
    # integration user (not the person who created the record).
    updates = [e for e in control.pubsub_events()["events"]
               if rid in e["header"]["recordIds"] and e["header"]["changeType"] == "UPDATE"]
    assert updates and {e["header"]["commitUser"] for e in updates} == {record["LastModifiedById"]}
    assert record["LastModifiedById"] != record["CreatedById"]
    queued_up_to(control, store, [rid])
    assert store.r.get(keys.record_last_job("Contact", rid)) == job.id
    assert len(cdc_dedupe_keys(store, rid)) == 1


def test_a_persons_update_of_an_input_field_makes_a_job_and_of_another_field_none(control, store):
    (rid,) = create_contacts(control, 1)
    first = final_job(store, "Contact", rid)
    control.edit_record("Contact", rid, {"Department": "Tea"})
    queued_up_to(control, store, [rid])
    assert store.r.get(keys.record_last_job("Contact", rid)) == first.id
    person = next(_next_person)
    control.edit_record("Contact", rid, {"Email": person.email})
    wait_for(lambda: store.r.get(keys.record_last_job("Contact", rid)) != first.id, 60, "a job for the update")
    assert len(cdc_dedupe_keys(store, rid)) == 2
    assert final_job(store, "Contact", rid).source == "cdc"


def test_a_killed_subscriber_restarted_misses_nothing_and_enriches_nothing_twice(cdc_stack, control, store):
    mark, before, dropped = clodura_mark(control), received(store), duplicates(store)
    first = create_contacts(control, 20)
    # Killed as soon as its first batch is queued: the rest of the stream,
    # and the replay id of what was queued meanwhile, it never saw.
    wait_for(lambda: received(store) > before, 60, "the subscriber's first jobs")
    cdc_stack.stop_process("events", signal.SIGKILL)
    print(f"killed with {received(store) - before:.0f} of 20 queued")
    while_down = create_contacts(control, 5)
    log_mark = max([e["seq"] for e in control.pubsub_log()] or [0])
    cdc_stack.start_events()
    for rid in first + while_down:
        job = final_job(store, "Contact", rid)
        assert job.state == "done", job.last_error
        assert len(cdc_dedupe_keys(store, rid)) == 1
    assert received(store) - before == 25
    assert person_enrich_calls(control, mark) == 25
    # It resumed after its stored replay id, not from the start: what came
    # again is at most the one batch queued but not yet recorded.
    resumed = [e["replay_preset"] for e in control.pubsub_log(since=log_mark)
               if e.get("topic") == CONTACTS and "replay_preset" in e]
    assert resumed and set(resumed) == {"CUSTOM"}
    assert duplicates(store) - dropped <= 5


def test_gap_events_are_read_through(control, store):
    control.pubsub_gap_fault("gap", times=2)
    gap_ids = create_contacts(control, 2)
    control.clear_pubsub_faults()
    control.pubsub_gap_fault("overflow", times=1)
    (overflow_id,) = create_contacts(control, 1)
    headers = {rid: e["header"]["changeType"] for e in control.pubsub_events()["events"]
               for rid in e["header"]["recordIds"] if rid in [*gap_ids, overflow_id]}
    assert headers == {gap_ids[0]: "GAP_CREATE", gap_ids[1]: "GAP_CREATE", overflow_id: "GAP_OVERFLOW"}
    for rid in [*gap_ids, overflow_id]:
        job = final_job(store, "Contact", rid)
        assert job.state == "done", job.last_error
        assert control.record("Contact", rid)["record"]["Enriched_At__c"]


def test_down_longer_than_the_retention_the_reconciliation_covers_the_gap(cdc_stack, control, store):
    (seen,) = create_contacts(control, 1)
    final_job(store, "Contact", seen)
    queued_up_to(control, store, [seen])
    cdc_stack.stop_process("events")
    missed = create_contacts(control, 2)
    # Every event so far, the stored replay id's among them, is older than
    # the retention now.
    control.pubsub_config(retention_s=0.001)
    wait_for(lambda: not control.pubsub_events()["events"], 10, "the events to expire")
    control.pubsub_config(retention_s=72 * 3600)
    cdc_stack.start_events()
    for rid in missed:
        job = final_job(store, "Contact", rid, timeout=90)
        assert job.state == "done", job.last_error
        assert job.source == "reconcile"
    # It resubscribed from the oldest event and still takes new records.
    (after,) = create_contacts(control, 1)
    assert final_job(store, "Contact", after).source == "cdc"
    assert "cdc.replay_id_expired" in (cdc_stack.log_dir / "events.log").read_text()


def test_metrics_count_deliveries_and_doctor_sees_the_subscriber(cdc_stack, control, store):
    (rid,) = create_contacts(control, 1)
    final_job(store, "Contact", rid)
    queued_up_to(control, store, [rid])
    text = requests.get(f"{cdc_stack.web_url}/metrics", timeout=10).text
    delivered = re.search(r'^crm_enrich_cdc_events_delivered_total\{topic="/data/ContactChangeEvent"\} ([\d.e+]+)$',
                          text, re.M)
    assert delivered and float(delivered.group(1)) >= 1
    assert re.search(r'^crm_enrich_cdc_last_replay_age_seconds\{topic="/data/ContactChangeEvent"\} [\d.e+-]+$',
                     text, re.M)
    heartbeat = re.search(r"^crm_enrich_cdc_subscriber_heartbeat_age_seconds ([\d.e+-]+)$", text, re.M)
    assert heartbeat and float(heartbeat.group(1)) < keys.CDC_HEARTBEAT_TTL_S
    code, checks, output = doctor(cdc_stack.env)
    assert checks["CDC subscriber"][0], output
    assert checks["CDC subscriber"][1].endswith("3/3 streams open")
    # Without it, doctor says the subscriber is missing.
    cdc_stack.stop_process("events")
    store.r.delete(keys.CDC_HEARTBEAT)
    _, checks, _ = doctor(cdc_stack.env)
    assert not checks["CDC subscriber"][0]
    cdc_stack.start_events()


def test_the_events_process_exits_at_once_unless_the_ingest_is_cdc(cdc_stack):
    env = {**cdc_stack.env, "SALESFORCE_INGEST": "outbound_message"}
    result = subprocess.run([sys.executable, "-m", "crm_enrich.ingest.subscriber"], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    assert "SALESFORCE_INGEST is not cdc" in result.stderr


def test_a_rejected_token_is_replaced_and_the_stream_opened_again(cdc_stack, control, store):
    # A fresh process: no schema fetched yet, its token taken at start.
    cdc_stack.stop_process("events")
    cdc_stack.start_events()
    mark = max([e["seq"] for e in control.pubsub_log()] or [0])
    control.http.post(f"{control.sf}/_sandbox/salesforce/expire-sessions").raise_for_status()
    # The Contact's event comes on the open stream; its schema is fetched
    # with the expired token, refused, and the stream opened again with a new one.
    (rid,) = create_contacts(control, 1)
    job = final_job(store, "Contact", rid)
    assert job.state == "done", job.last_error
    calls = control.pubsub_log(since=mark)
    refused = [e["seq"] for e in calls if e.get("refused") == "credentials"]
    reopened = [e["seq"] for e in calls if e["rpc"] == "Subscribe" and e.get("topic") == CONTACTS
                and e.get("accepted")]
    assert refused and reopened and max(reopened) > min(refused)
    assert len(cdc_dedupe_keys(store, rid)) == 1


def test_no_email_from_the_change_events_reaches_the_logs(cdc_stack, control, store):
    people = [next(_next_person) for _ in range(3)]
    ids = contacts_for(control, people)
    for rid in ids:
        final_job(store, "Contact", rid)
    queued_up_to(control, store, ids)
    events_log = (cdc_stack.log_dir / "events.log").read_text()
    assert "cdc.subscribed" in events_log  # the subscriber's log is really there
    logs = "\n".join(p.read_text() for p in cdc_stack.log_dir.glob("*.log"))
    for person in people:
        assert person.email not in logs
    assert [h for h in UNMASKED_EMAIL.findall(logs) if not h.endswith("@127.0.0.1")] == []  # celery node names


def test_a_quiet_topic_keeps_its_replay_id_fresh_from_keepalives(cdc_stack, control, store):
    leads = "/data/LeadChangeEvent"
    control.pubsub_config(keepalive_s=0.3)
    try:
        # Streams opened from now on get a keepalive every 0.3 s while events are owed.
        cdc_stack.stop_process("events")
        cdc_stack.start_events()
        (rid,) = create_contacts(control, 1)   # the stream moves on; the Lead topic has no event
        latest = max(int(e["replay_id"], 16) for e in control.pubsub_events()["events"])

        def stored() -> int:
            value = store.r.hget(keys.cdc_replay(leads), "replay_id") or ""
            return int(value, 16) if value not in ("", "EARLIEST") else -1

        wait_for(lambda: stored() >= latest, 30, "a keepalive's replay id stored for the quiet Lead topic")
        final_job(store, "Contact", rid)
    finally:
        control.pubsub_config(keepalive_s=270)


def test_outbound_messages_from_flows_left_active_are_acknowledged_and_dropped(cdc_stack, control, store):
    """Runs last: the org sends every Outbound Message it held, too."""
    def ignored() -> float:
        return sum(v for name, labels, v in counters.read(store.r)
                   if name == "records_ignored" and labels == {"source": "outbound_message", "reason": "ingest_is_cdc"})

    mark, before = clodura_mark(control), ignored()
    control.salesforce_config(listener_url=cdc_stack.outbound_url)
    try:
        (rid,) = create_contacts(control, 1)
        job = final_job(store, "Contact", rid)
        assert job.state == "done" and job.source == "cdc", job.last_error

        def acked() -> list[dict]:
            notes = [n for n in control.outbound_log()["notifications"] if n["record_id"] == rid]
            return notes if notes and all(n["state"] == "acked" for n in notes) else []

        notes = wait_for(acked, 60, "the record's Outbound Message to be acknowledged")
        # Acknowledged, counted, and no job of its own: one job, one enrich.
        assert all(store.r.get(store.dedupe_key(keys.outbound_notification(n["id"]))) is None for n in notes)
        assert ignored() > before
        queued_up_to(control, store, [rid])
        assert store.r.get(keys.record_last_job("Contact", rid)) == job.id
        assert person_enrich_calls(control, mark) == 1
    finally:
        control.salesforce_config(listener_url=None)
