"""The last step: the field map's changes fitted to the org's fields and
queued for a batched write; the flush ends the job."""
from __future__ import annotations

from crm_enrich import keys
from crm_enrich.field_map import value_hash
from crm_enrich.jobs.state import State
from crm_enrich.jobs.store import load_tracked_hashes
from crm_enrich.queues import FLUSH_WRITES, REVERIFY_SOURCE
from crm_enrich.salesforce.batch_queue import BatchQueue
from crm_enrich.salesforce.batches import READ_AT, flush_writes
from tests.unit.flow.fakes import PERSON, VERIFIED_AT
from tests.unit.flow.harness import CONTACT_ID


def test_the_flush_writes_the_changes_ends_the_job_and_remembers_tracked_values(flow):
    flow.contact()
    job_id = flow.started(flow.new_job("Contact", CONTACT_ID))
    assert flow.advance(job_id) == State.WRITING
    (queued,) = flow.queued_writes()

    assert flow.write_batch() == 1
    ((records,),) = flow.salesforce.args("update_collection")
    assert records == [{"attributes": {"type": "Contact"}, "id": CONTACT_ID, **queued["changes"]}]
    job = flow.job(job_id)
    assert (job.state, job.fields_written) == (State.DONE, sorted(queued["changes"]))
    remembered = load_tracked_hashes(flow.store, "Contact", CONTACT_ID)
    assert remembered["LinkedIn_URL__c"] == value_hash(PERSON["linkedinUrl"])
    assert set(remembered) == set(queued["tracked"]) & set(queued["changes"])   # hashes, never values
    assert flow.queued_writes() == []


def test_values_are_fitted_to_the_orgs_fields(flow):
    flow.clodura.person = {**PERSON, "personTitle": "Senior Vice President of Worldwide Sales " * 5}
    flow.contact()
    job_id = flow.started(flow.new_job("Contact", CONTACT_ID))
    flow.advance(job_id)
    assert len(flow.queued_writes()[0]["changes"]["Title"]) == 128      # the fake org's Title length


def test_a_reverification_that_changes_nothing_is_done_at_once_without_a_write(flow):
    flow.contact(Email_Verification_Status__c="valid", Email_Verification_Detail__c="clodura standard: Deliverable",
                 Email_Verified_At__c=VERIFIED_AT)
    job_id = flow.started(flow.new_job("Contact", CONTACT_ID, source=REVERIFY_SOURCE))
    assert flow.advance(job_id) == State.DONE
    assert flow.job(job_id).fields_written == []
    assert flow.queued_writes() == []
    assert flow.clodura.count("enrich_contact") == 0          # a re-verification only verifies
    assert flow.clodura.count("verify_email") == 1


def test_a_reverification_with_a_new_verdict_writes_only_the_verdict(flow):
    flow.clodura.verdicts["dana@acme.example"] = "Undeliverable"
    flow.contact(Email_Verification_Status__c="valid")
    job_id = flow.started(flow.new_job("Contact", CONTACT_ID, source=REVERIFY_SOURCE))
    assert flow.advance(job_id) == State.WRITING
    (write,) = flow.queued_writes()
    assert set(write["changes"]) == {"Email_Verification_Status__c", "Email_Verification_Detail__c",
                                     "Email_Verified_At__c"}
    assert write["urgent"] is False                            # bulk work


def test_a_flush_that_runs_as_soon_as_the_write_is_queued_still_ends_the_job(flow):
    batches = flow.svc.batches
    batches.writes = BatchQueue(flow.store.r, keys.SALESFORCE_WRITES, max_batch=1)   # one item fills a batch

    def schedule(task: str, countdown: float) -> None:
        if task == FLUSH_WRITES and countdown == 0:
            flush_writes(batches)        # another worker picks the flush task up at once

    batches.schedule = schedule
    flow.contact()
    job_id = flow.started(flow.new_job("Contact", CONTACT_ID))
    flow.advance(job_id)
    assert flow.salesforce.count("update_collection") == 1    # the values are in Salesforce
    assert flow.job(job_id).state == State.DONE


def test_a_plan_from_a_fresh_read_is_written_without_a_second_read(flow):
    flow.svc.batches.reread_after_s = 30          # WRITEBACK_REREAD_AFTER_S
    flow.contact()
    job_id = flow.started(flow.new_job("Contact", CONTACT_ID))
    assert flow.advance(job_id) == State.WRITING
    assert flow.write_batch() == 1
    assert flow.salesforce.count("read_records") == 1      # the job's own read only
    assert flow.salesforce.count("update_collection") == 1
    assert flow.job(job_id).state == State.DONE


def test_a_plan_from_an_older_read_is_checked_against_a_second_read(flow):
    flow.svc.batches.reread_after_s = 30
    flow.contact()
    job_id = flow.started(flow.new_job("Contact", CONTACT_ID))
    record = flow.memory(job_id)["record"]
    # The read is a minute old by the time the job plans its write (a reveal, a 202 verdict).
    flow.store.save_provider_data(job_id, "record", {**record, READ_AT: record[READ_AT] - 60})
    assert flow.advance(job_id) == State.WRITING
    assert flow.write_batch() == 1
    assert flow.salesforce.count("read_records") == 2      # the job's read, and the flush's second look
    assert flow.job(job_id).state == State.DONE


def test_a_new_records_write_is_not_held_for_the_bulk_jobs_read_with_it(flow):
    """A live record's read rode with a backfill's: the writes await each
    job in its own lane, so the live write waits for no bulk job."""
    live = flow.new_job("Contact", CONTACT_ID)
    bulk = [flow.new_job("Contact", f"0035g00000Bulk{i}AAA", source="backfill") for i in range(3)]
    flow.contact()
    for i in range(3):
        flow.contact(f"0035g00000Bulk{i}AAA")
    for job_id in [live, *bulk]:
        assert flow.advance(job_id) == "received"
    assert flow.read_batch() == 1
    writes = flow.svc.batches.writes
    assert set(writes.expected_jobs("urgent").values()) == {live}
    assert set(writes.expected_jobs("bulk").values()) == {live, *bulk}   # bulk waits for everyone
