"""A job whose Outbound Message declares its fields (SALESFORCE_OUTBOUND_FIELDS):
the message stands for the read when it holds every field the job reads; a
Contact's Account fields come from its Account's recent notification."""
from __future__ import annotations

import time
import uuid

from crm_enrich.flow.intake import InboundRecord, accept_records
from crm_enrich.flow.record import FROM_MESSAGE, READY, RECORD, fields_to_read
from crm_enrich.flow.write_back import write_partner
from crm_enrich.jobs.state import State
from crm_enrich.salesforce.batches import READ_AT
from tests.unit.flow.fakes import PERSON
from tests.unit.flow.harness import ACCOUNT_ID, CONTACT_ID, CREATED, EDITED, INTEGRATION_USER, SOMEONE_ELSE

SENT_AUDIT = {"CreatedDate": CREATED, "LastModifiedDate": CREATED, "LastModifiedById": SOMEONE_ELSE}


def message_job(flow, object_type: str, record_id: str, values: dict) -> str:
    """A job as the Outbound Message endpoint makes it, with the declared values."""
    sent = InboundRecord(f"om:{uuid.uuid4().hex}", object_type, record_id, "outbound_message",
                         values={"Id": record_id, **values})
    (job_id,) = accept_records(flow.store, lambda job_ids, source: None, [sent]).accepted
    return job_id


def declared(flow, object_type: str, **values) -> dict:
    """Every field the job reads that a message can carry (absent: None), with `values`."""
    own = [name for name in fields_to_read(flow.svc, object_type) if "." not in name]
    return {**dict.fromkeys(own), **SENT_AUDIT, **values}


def test_a_message_holding_every_field_is_not_read_and_an_absent_field_is_null(flow):
    flow.contact(Title="Chief Wizard")      # what the org holds; the message says Title is empty
    job_id = message_job(flow, "Contact", CONTACT_ID,
                         declared(flow, "Contact", FirstName="Dana", LastName="Rivers", Email="dana@acme.example"))
    assert flow.advance(job_id) == State.WRITING
    assert flow.salesforce.count("read_records") == 0 and flow.store.r.llen(flow.svc.batches.reads.pending) == 0
    record = flow.memory(job_id)[RECORD]
    assert record[FROM_MESSAGE] == READY and time.time() - record[READ_AT] < 60
    (write,) = flow.queued_writes()
    assert write["changes"]["Title"] == PERSON["personTitle"]    # the message said blank: fill_blank fills it


def test_a_declaration_short_of_a_field_the_job_reads_is_read(flow):
    flow.contact(Title="Chief Wizard")
    values = declared(flow, "Contact", FirstName="Dana", LastName="Rivers", Email="dana@acme.example")
    del values["Title"]                     # the field map's field is not declared
    job_id = message_job(flow, "Contact", CONTACT_ID, values)
    flow.started(job_id)                    # the batched read, as without a declaration
    assert flow.advance(job_id) == State.WRITING
    assert "Title" not in flow.queued_writes()[0]["changes"]   # the org's value, read, is kept


def test_a_message_without_a_creation_date_describes_no_record_and_is_read(flow):
    values = declared(flow, "Contact", LastName="Rivers", CreatedDate=None)   # deleted before it was sent
    job_id = message_job(flow, "Contact", CONTACT_ID, values)
    assert flow.advance(job_id) == State.RECEIVED
    assert flow.read_batch() == 1
    assert flow.advance(job_id) == State.SKIPPED
    assert flow.clodura.calls == []


def test_our_own_write_back_sent_back_by_the_org_is_skipped_without_a_read(flow):
    values = declared(flow, "Contact", LastName="Rivers", LastModifiedById=INTEGRATION_USER,
                      LastModifiedDate=EDITED)
    job_id = message_job(flow, "Contact", CONTACT_ID, values)
    assert flow.advance(job_id) == State.SKIPPED
    assert flow.job(job_id).last_error == "the change was our own write-back"
    assert flow.salesforce.count("read_records") == 0 and flow.clodura.calls == []


def account_message(flow, received_ago_s: float = 0) -> str:
    job_id = message_job(flow, "Account", ACCOUNT_ID, declared(flow, "Account", Name="Acme Inc",
                                                               NumberOfEmployees="250"))
    if received_ago_s:
        record = flow.memory(job_id)[RECORD]
        flow.store.save_provider_data(job_id, RECORD, {**record, READ_AT: record[READ_AT] - received_ago_s})
    return job_id


def test_a_contact_takes_its_accounts_fields_from_the_accounts_recent_message(flow):
    account_job = account_message(flow)
    values = declared(flow, "Contact", FirstName="Dana", LastName="Rivers", Email="dana@acme.example",
                      AccountId=ACCOUNT_ID)
    job_id = message_job(flow, "Contact", CONTACT_ID, values)
    assert flow.advance(job_id) == State.WRITING
    assert flow.salesforce.count("read_records") == 0
    record = flow.memory(job_id)[RECORD]
    assert record["Account.Id"] == ACCOUNT_ID and record["Account.Name"] == "Acme Inc"
    assert record["Account.NumberOfEmployees"] == 250 and record["Account.Industry"] is None   # typed as read
    assert write_partner(flow.svc, account_job) == job_id   # the Account's write will wait for this one's


def test_a_contact_whose_accounts_message_is_too_old_is_read(flow):
    account_message(flow, received_ago_s=flow.svc.settings.salesforce_outbound_account_max_age_s + 5)
    flow.contact(AccountId=ACCOUNT_ID)
    values = declared(flow, "Contact", FirstName="Dana", LastName="Rivers", Email="dana@acme.example",
                      AccountId=ACCOUNT_ID)
    job_id = message_job(flow, "Contact", CONTACT_ID, values)
    assert flow.advance(job_id) == State.RECEIVED
    assert flow.read_batch() == 1
    assert "Account.Name" in flow.memory(job_id)[RECORD]   # read with its Account's fields, as before


def test_a_contact_of_an_account_nobody_sent_is_read(flow):
    flow.contact(AccountId=ACCOUNT_ID)
    job_id = message_job(flow, "Contact", CONTACT_ID, declared(flow, "Contact", LastName="Rivers",
                                                               AccountId=ACCOUNT_ID))
    assert flow.advance(job_id) == State.RECEIVED
    assert flow.read_batch() == 1
