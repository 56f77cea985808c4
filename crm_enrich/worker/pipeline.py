"""The enrichment of one record, as plain functions over a job.

Each provider answer is stored on the job before the next step, so a task
that is replayed (killed worker, retry) continues where it stopped and never
pays for the same answer twice.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from crm_enrich.logs import log
from crm_enrich.settings import Settings
from crm_enrich.worker.clodura import (
    CloduraClient, CreditsExhausted, DailyQuotaExceeded, ProviderError, backoff_s,
)
from crm_enrich.worker.field_map import FieldMap, is_blank, plan_changes, value_hash
from crm_enrich.worker.ratelimit import RateLimited
from crm_enrich.worker.jobs import Job, JobStore, load_tracked_hashes, save_tracked_hashes
from crm_enrich.worker.salesforce import SalesforceFailure, SalesforceGateway

PERSON_OBJECTS = {"Contact", "Lead"}
# What we need to know of a record to find the person and apply the map.
IDENTITY_FIELDS = {"Contact": ["FirstName", "LastName", "Email", "AccountId"],
                   "Lead": ["FirstName", "LastName", "Email", "Company", "Website"]}
PARKED_STATES = {"awaiting_email", "awaiting_verification"}

# Clodura's verification results (contracts/clodura.md §8.7) → our verdicts.
VERDICTS = {
    "deliverable": "valid",
    "undeliverable": "invalid",
    "risky (catch-all)": "catch_all",
    "catch-all": "catch_all",
    "risky": "risky",
}


@dataclass
class Services:
    settings: Settings
    store: JobStore
    clodura: CloduraClient
    salesforce: SalesforceGateway
    field_map: FieldMap


class RetryLater(Exception):
    def __init__(self, reason: str, countdown: float):
        super().__init__(reason)
        self.reason = reason
        self.countdown = countdown


def normalise_verdict(result: str | None) -> str:
    return VERDICTS.get((result or "").strip().lower(), "unknown")


def _iso_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def enrich_identifiers(record: dict, company_name: str | None) -> dict:
    """The strongest identifiers we have (contracts/clodura.md §8.6)."""
    ids = {}
    if not is_blank(record.get("LinkedIn_URL__c")):
        ids["linkedinUrl"] = record["LinkedIn_URL__c"]
    if not is_blank(record.get("Email")):
        ids["email"] = record["Email"]
    if not is_blank(record.get("FirstName")) and not is_blank(record.get("LastName")):
        ids["firstName"], ids["lastName"] = record["FirstName"], record["LastName"]
        if company_name:
            ids["organisationName"] = company_name
    return ids


def field_sources(person: dict | None, verification: dict | None, now: str) -> dict:
    sources = {"meta.enriched_at": now}
    if person:
        functional = person.get("functional") or []
        org = person.get("organisation") or {}
        sources.update({
            "person.id": person.get("personId"),
            "person.title": person.get("personTitle"),
            "person.department": functional[0] if functional else None,
            "person.linkedin_url": person.get("linkedinUrl"),
            "organisation.id": org.get("organisationId"),
            "organisation.industry": org.get("industry"),
            "organisation.employee_count": org.get("employeeCount"),
            "organisation.website": f"https://{org['domain']}" if org.get("domain") else None,
        })
    if verification:
        sources["verification.status"] = verification["status"]
        sources["verification.verified_at"] = verification["verified_at"]
    return sources


def _read_record(svc: Services, job: Job) -> dict | None:
    """The record as it is now. Outbound Messages omit null fields, so unless
    the event carried every field we need, we read it (one SOQL query)."""
    needed = IDENTITY_FIELDS[job.object] + svc.field_map.target_fields(job.object)
    if all(name in job.input for name in needed):
        return dict(job.input)
    found = svc.salesforce.read_records(job.object, [job.record_id], needed)
    return found.get(job.record_id)


def _company_name(svc: Services, job: Job, record: dict) -> str | None:
    if job.object == "Lead":
        return record.get("Company")
    if record.get("AccountId"):
        accounts = svc.salesforce.read_records("Account", [record["AccountId"]], ["Name"])
        return (accounts.get(record["AccountId"]) or {}).get("Name")
    return None


def process_job(svc: Services, job_id: str) -> str:
    """Advance a job as far as it can go now; answer its state."""
    store = svc.store
    job = store.get(job_id)
    if job is None:
        log.warning("job.missing", job_id=job_id)
        return "missing"
    if job.final or job.state in PARKED_STATES:
        return job.state  # replayed task: nothing left to do here
    store.count_attempt(job)
    try:
        return _advance(svc, job)
    except RateLimited as exc:
        # Our own limiter said wait: hand the worker back, no error recorded.
        raise RetryLater("waiting for a rate-limit slot", exc.wait_s) from None
    except DailyQuotaExceeded as exc:
        store.transition(job, "deferred", last_error=str(exc))
    except CreditsExhausted as exc:
        store.transition(job, "paused", last_error=str(exc))
    except ProviderError as exc:
        if exc.retryable:
            store.transition(job, job.state, last_error=str(exc))
            raise RetryLater(str(exc), exc.retry_after or backoff_s(job.attempts)) from None
        store.transition(job, "failed", last_error=str(exc))
    except SalesforceFailure as exc:
        if exc.record_gone:
            store.transition(job, "skipped", last_error=f"record gone: {exc.code}")
        elif exc.retryable:
            store.transition(job, job.state, last_error=str(exc))
            raise RetryLater(str(exc), backoff_s(job.attempts)) from None
        else:
            store.transition(job, "failed", last_error=str(exc))
    log.info("job.stopped", job_id=job.id, record_id=job.record_id, state=job.state,
             error=job.last_error)
    return job.state


def give_up(svc: Services, job_id: str, reason: str) -> None:
    """Retries exhausted: park the job as a dead letter, visible for a re-run."""
    job = svc.store.get(job_id)
    if job and not job.final:
        svc.store.transition(job, "failed", last_error=f"gave up after retries: {reason}")
        log.warning("job.failed", job_id=job.id, record_id=job.record_id, reason=reason)


def _advance(svc: Services, job: Job) -> str:
    store = svc.store
    if job.object not in PERSON_OBJECTS:
        store.transition(job, "skipped", last_error=f"{job.object} enrichment is not supported yet")
        return job.state
    data = store.provider_data(job.id)

    record = _read_record(svc, job)
    if record is None:
        store.transition(job, "skipped", last_error="record deleted or not visible")
        return job.state

    if "person" not in data:
        store.transition(job, "enriching")
        ids = enrich_identifiers(record, None)
        if "email" not in ids and "linkedinUrl" not in ids:
            # Names alone need the employer's name: one more read, only here.
            ids = enrich_identifiers(record, _company_name(svc, job, record))
        data["person"] = svc.clodura.enrich_contact(ids) if ids else None
        store.save_provider_data(job.id, "person", data["person"])

    email = record.get("Email")
    if not is_blank(email) and "verification" not in data:
        store.transition(job, "verifying")
        answer = svc.clodura.verify_email(email)
        if answer.accepted_for_later:
            store.save_provider_data(job.id, "verification_doc", answer.body.get("docId"))
            store.transition(job, "awaiting_verification")
            return job.state
        data["verification"] = {
            "status": normalise_verdict(answer.body.get("result")),
            "detail": answer.body.get("result"),
            "verified_at": answer.body.get("verifiedAt") or _iso_now(),
        }
        store.save_provider_data(job.id, "verification", data["verification"])

    person, verification = data.get("person"), data.get("verification")
    if not person and not verification:
        store.transition(job, "skipped", last_error="no match at Clodura and no email to verify")
        return job.state

    store.transition(job, "writing")
    tracked = load_tracked_hashes(store, job.object, job.record_id)
    changes = plan_changes(svc.field_map, job.object, record,
                           field_sources(person, verification, _iso_now()), tracked)
    if changes:
        svc.salesforce.update_record(job.object, job.record_id, changes)
        tracked_fields = {r.field for r in svc.field_map.rules_for(job.object) if r.rule == "tracked"}
        save_tracked_hashes(store, job.object, job.record_id,
                            {f: value_hash(v) for f, v in changes.items() if f in tracked_fields})
    store.save_provider_data(job.id, "outcome", {
        "matched": bool(person and person.get("personId")), "verdict": verification["status"] if verification else None})
    store.transition(job, "done", fields_written=sorted(changes), last_error=None)
    log.info("job.done", job_id=job.id, record_id=job.record_id, fields=sorted(changes))
    return job.state
