"""The record a job works on, as Salesforce has it: read in a batch (the
job parks until the read resumes it), and the checks every job makes
before spending anything: is it still there, and was the change our own?"""
from __future__ import annotations

import json
import time
from collections.abc import Mapping

from crm_enrich import keys
from crm_enrich.field_map import FieldMap, is_blank
from crm_enrich.jobs.state import SkipReason, State
from crm_enrich.jobs.store import Job, JobMemory
from crm_enrich.queues import EVENT_SOURCES
from crm_enrich.salesforce.batches import READ_AT, queue_read
from crm_enrich.salesforce.ids import PERSON_OBJECTS
from crm_enrich.salesforce.outbound_message import SentValue, as_read

from .services import Services
from .write_back import share_write_with

__all__ = ["PERSON_OBJECTS", "record_to_work_on"]
# What we need to know of a record to find the person, apply the map and
# recognise our own changes.
IDENTITY_FIELDS = {"Contact": ["FirstName", "LastName", "Email", "AccountId", "Account.Name", "Account.Website"],
                   "Lead": ["FirstName", "LastName", "Email", "Company", "Website"],
                   "Account": ["Name", "Website"]}
AUDIT_FIELDS = ["CreatedDate", "LastModifiedDate", "LastModifiedById"]
RECORD = "record"   # the job's slot for the record read
ACCOUNT = "Account"   # a Contact's relationship to its Account
# In a job's record: it came from an authenticated Outbound Message whose
# fields are declared (SALESFORCE_OUTBOUND_FIELDS), SENT as the message
# sent it, READY once it was found to hold all the job needs.
FROM_MESSAGE, SENT, READY = "_from_message", "sent", "ready"


def sent_record(values: Mapping[str, SentValue], received_at: float) -> dict:
    """A message's declared values (absent ones None), saved where a read
    saves its record and stamped as one made when the message came."""
    return {**values, READ_AT: received_at, FROM_MESSAGE: SENT}


def is_own_change(record: dict, integration_user_id: str | None) -> bool:
    """The record's latest change is our write-back (not its creation)."""
    return bool(
        integration_user_id
        and record.get("LastModifiedById", "")[:15] == integration_user_id[:15]
        and record.get("LastModifiedDate") not in (None, record.get("CreatedDate"))
    )


def fields_to_read(svc: Services, object_type: str) -> list[str]:
    return fields_read(svc.field_map, object_type)


def fields_read(field_map: FieldMap, object_type: str) -> list[str]:
    """What a job's read asks for: the record's own fields, and for a
    Contact its Account's as relationship fields (`Account.Name`)."""
    fields = IDENTITY_FIELDS[object_type] + AUDIT_FIELDS + field_map.target_fields(object_type)
    if object_type == "Contact" and field_map.rules_for("Account"):
        # The Account's own fields come in the same query (relationship
        # fields): its job starts from them instead of reading it again.
        fields += [f"{ACCOUNT}.{name}" for name in _account_fields(field_map) if f"{ACCOUNT}.{name}" not in fields]
    return fields


def account_fields(svc: Services) -> list[str]:
    return _account_fields(svc.field_map)


def _account_fields(field_map: FieldMap) -> list[str]:
    return ["Id", *IDENTITY_FIELDS["Account"], *AUDIT_FIELDS, *field_map.target_fields("Account")]


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
    queued (200 records to a query). A JSON event's values are not evidence
    of anything, so its job reads. An Outbound Message whose fields are
    declared came through the endpoint only the org knows (its URL token)
    and says what the record holds, as a CREATE change event does (over
    the stream we opened to Salesforce, with every field the object's
    change events carry); either stands for the read when it holds every
    field the job would read (see `record_from_message`)."""
    record = memory.get(RECORD)
    if record is not None and record.get(FROM_MESSAGE) != SENT:
        return record
    if record is not None:
        ready = record_from_message(svc, job, record)
        if ready is not None:
            return memory.keep(RECORD, ready)
    queue_read(svc.batches, job.id, job.object, job.record_id, fields_to_read(svc, job.object),
               urgent=job.source in EVENT_SOURCES)
    return None


def record_from_message(svc: Services, job: Job, sent: dict) -> dict | None:
    """The record as a read would bring it, from its message's declared
    values, or None when they do not cover every field the job reads. A
    Contact's Account fields (which no Outbound Message can send) come from
    a recent notification or read of the Account (`recent_account`), or
    are not needed when it has no Account."""
    wanted = fields_to_read(svc, job.object)
    if not all(name in sent for name in wanted if "." not in name) or sent.get("CreatedDate") is None:
        # Short of a field, or describing no record: every record has a
        # CreatedDate, and one deleted before the message went has no fields.
        return None
    record = as_read(sent, svc.schema.describe(job.object))
    related = [name.partition(".")[2] for name in wanted if name.startswith(f"{ACCOUNT}.")]
    if related and not is_blank(record.get("AccountId")):
        related = list(dict.fromkeys(["Id", *related]))
        found = recent_account(svc, str(record["AccountId"]), related)
        if found is None:
            return None
        account_job, account = found
        # That Account's job, if still on its way, waits for this one's
        # write: both go in one call.
        share_write_with(svc, account_job, job.id)
        record.update({f"{ACCOUNT}.{name}": account[name] for name in related})
        # The plan is as fresh as its older half (WRITEBACK_REREAD_AFTER_S).
        record[READ_AT] = min(record[READ_AT], account[READ_AT])
    record[FROM_MESSAGE] = READY
    return record


def recent_account(svc: Services, account_id: str, fields: list[str]) -> tuple[str, dict] | None:
    """The Account's latest job and the Account as that job knows it (its
    notification's declared values, or its read), if that is at most
    SALESFORCE_OUTBOUND_ACCOUNT_MAX_AGE_S old and holds `fields`; else None.
    Nothing is stored for this: the job's record goes when the job ends."""
    max_age = svc.settings.salesforce_outbound_account_max_age_s
    job_id = svc.store.r.get(keys.record_last_job(ACCOUNT, account_id)) if max_age > 0 else None
    raw = svc.store.r.hget(svc.store.provider_key(str(job_id)), RECORD) if job_id else None
    account = json.loads(str(raw)) if raw else None
    # (No CreatedDate: the Account was not found, or was deleted before its message went.)
    if (account is None or account.get("CreatedDate") is None
            or time.time() - float(account.get(READ_AT, 0)) > max_age or not all(name in account for name in fields)):
        return None
    if account.get(FROM_MESSAGE) == SENT:  # not yet looked at by its own job
        account = as_read(account, svc.schema.describe(ACCOUNT))
    return str(job_id), account


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
