"""The checks every job makes before it spends anything: the record is
still there, and the change that sent the event was not our own write."""
from __future__ import annotations

import pytest

from crm_enrich.jobs.state import State
from crm_enrich.queues import REVERIFY_SOURCE
from tests.unit.flow.harness import CONTACT_ID, CREATED, EDITED, INTEGRATION_USER, SOMEONE_ELSE


def test_a_record_the_read_does_not_find_is_skipped_before_any_spending(flow):
    job_id = flow.new_job("Contact", CONTACT_ID)            # the org has no such record (deleted since)
    flow.advance(job_id)
    assert flow.read_batch() == 1
    assert flow.memory(job_id)["record"]["_missing"] is True

    assert flow.advance(job_id) == State.SKIPPED
    assert flow.job(job_id).last_error == "record deleted or not visible"
    assert flow.clodura.calls == []
    assert flow.spent() == 0


@pytest.mark.parametrize("by", [INTEGRATION_USER, INTEGRATION_USER[:15]])
def test_our_own_write_back_coming_back_as_an_event_is_skipped(flow, by):
    flow.contact(LastModifiedById=by, CreatedDate=CREATED, LastModifiedDate=EDITED)
    job_id = flow.started(flow.new_job("Contact", CONTACT_ID, source="outbound_message"))
    assert flow.advance(job_id) == State.SKIPPED
    assert flow.job(job_id).last_error == "the change was our own write-back"
    assert flow.clodura.calls == []
    assert flow.queued_writes() == []


@pytest.mark.parametrize("source, audit", [
    # A record the integration user created (not changed): new work.
    ("outbound_message", {"LastModifiedById": INTEGRATION_USER, "LastModifiedDate": CREATED}),
    # Someone else's change.
    ("json_event", {"LastModifiedById": SOMEONE_ELSE, "LastModifiedDate": EDITED}),
    # Not an event: an operator's re-run of a record we wrote ourselves.
    ("rerun", {"LastModifiedById": INTEGRATION_USER, "LastModifiedDate": EDITED}),
    (REVERIFY_SOURCE, {"LastModifiedById": INTEGRATION_USER, "LastModifiedDate": EDITED}),
])
def test_other_changes_go_ahead(flow, source, audit):
    flow.contact(CreatedDate=CREATED, **audit)
    job_id = flow.started(flow.new_job("Contact", CONTACT_ID, source=source))
    assert flow.advance(job_id) == State.WRITING
    assert flow.clodura.count("verify_email") == 1


def test_an_event_carrying_every_field_is_still_read_and_its_values_are_not_trusted(flow):
    record = flow.contact(Title="Chief Financial Officer")      # what the org really holds
    forged = {**flow.complete_input("Contact", record), "Title": None}   # an envelope saying it is blank
    job_id = flow.new_job("Contact", CONTACT_ID, fields=forged)
    assert flow.advance(job_id) is not None
    assert flow.salesforce.count("read_records") == 0   # the read is queued for a batch, not made here
    flow.read_batch()
    flow.advance(job_id)
    assert flow.salesforce.count("read_records") == 1
    assert "Title" not in flow.queued_writes()[0]["changes"]   # fill_blank keeps the org's real title


def test_an_event_missing_a_field_is_read_and_the_read_record_is_what_counts(flow):
    flow.contact(Title="Chief Wizard")   # the org has a title; the event left it out
    job_id = flow.new_job("Contact", CONTACT_ID, fields={"Email": "dana@acme.example", "Title": None})
    flow.started(job_id)
    assert flow.advance(job_id) == State.WRITING
    assert "Title" not in flow.queued_writes()[0]["changes"]   # fill_blank keeps the org's value
