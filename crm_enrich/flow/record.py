"""The record a job works on, as Salesforce has it: read in a batch (the
job parks until the read resumes it), and the checks every job makes
before spending anything: is it still there, and was the change our own?"""
from __future__ import annotations

from crm_enrich.jobs.state import SkipReason, State
from crm_enrich.jobs.store import Job, JobMemory
from crm_enrich.queues import EVENT_SOURCES
from crm_enrich.salesforce.batches import READ_AT, queue_read
from crm_enrich.salesforce.ids import PERSON_OBJECTS

from .services import Services

__all__ = ["PERSON_OBJECTS", "record_to_work_on"]
# What we need to know of a record to find the person, apply the map and
# recognise our own changes.
IDENTITY_FIELDS = {"Contact": ["FirstName", "LastName", "Email", "AccountId", "Account.Name", "Account.Website"],
                   "Lead": ["FirstName", "LastName", "Email", "Company", "Website"],
                   "Account": ["Name", "Website"]}
AUDIT_FIELDS = ["CreatedDate", "LastModifiedDate", "LastModifiedById"]
RECORD = "record"   # the job's slot for the record read
ACCOUNT = "Account"   # a Contact's relationship to its Account


def is_own_change(record: dict, integration_user_id: str | None) -> bool:
    """The record's latest change is our write-back (not its creation)."""
    return bool(
        integration_user_id
        and record.get("LastModifiedById", "")[:15] == integration_user_id[:15]
        and record.get("LastModifiedDate") not in (None, record.get("CreatedDate"))
    )


def fields_to_read(svc: Services, object_type: str) -> list[str]:
    fields = IDENTITY_FIELDS[object_type] + AUDIT_FIELDS + svc.field_map.target_fields(object_type)
    if object_type == "Contact" and svc.field_map.rules_for("Account"):
        # The Account's own fields come in the same query (relationship
        # fields): its job starts from them instead of reading it again.
        fields += [f"{ACCOUNT}.{name}" for name in account_fields(svc) if f"{ACCOUNT}.{name}" not in fields]
    return fields


def account_fields(svc: Services) -> list[str]:
    return ["Id", *IDENTITY_FIELDS["Account"], *AUDIT_FIELDS, *svc.field_map.target_fields("Account")]


def account_record(svc: Services, contact: dict) -> dict | None:
    """The Contact's Account as its read brought it (relationship fields),
    shaped as a read of the Account; None if the read did not bring it."""
    names = account_fields(svc)
    if not all(f"{ACCOUNT}.{name}" in contact for name in names) or not contact.get(f"{ACCOUNT}.Id"):
        return None
    record = {name: contact[f"{ACCOUNT}.{name}"] for name in names}
    if READ_AT in contact:
        record[READ_AT] = contact[READ_AT]
    return record


def current_record(svc: Services, job: Job, memory: JobMemory) -> dict | None:
    """The record as Salesforce has it, or None when a batched read was
    queued (200 records to a query). Always read: an event's field values
    are not evidence of anything (anyone who knows the endpoint could send
    any), and we decide what to enrich, what to write and whether the change
    was our own from the record itself."""
    if RECORD in memory:
        return memory[RECORD]
    # A later fast path could skip this read for an authenticated Outbound
    # Message, using only the fields a setting declares it sends (so that an
    # absent field means null); not built: the read costs one call per 200.
    queue_read(svc.batches, job.id, job.object, job.record_id, fields_to_read(svc, job.object),
               urgent=job.source in EVENT_SOURCES)
    return None


def record_to_work_on(svc: Services, job: Job, memory: JobMemory, own_change_counts: bool = True) -> dict | None:
    """The record, or None when the job cannot go on now: parked for the
    batched read, or skipped (the record is gone, or the event was our own
    write-back; `own_change_counts` is False for work we queued ourselves)."""
    record = current_record(svc, job, memory)
    if record is None:
        return None
    if record.get("_missing"):
        svc.store.finish(job, State.SKIPPED, SkipReason.RECORD_GONE)
        return None
    if (own_change_counts and job.source in EVENT_SOURCES
            and is_own_change(record, svc.batches.salesforce.integration_user_id)):
        svc.store.finish(job, State.SKIPPED, SkipReason.OWN_WRITE_BACK)
        return None
    return record
