"""The enrichment of one record, as plain functions over a job.

Each provider answer is stored on the job before the next step, so a task
that is replayed (killed worker, retry) continues where it stopped and never
pays for the same answer twice. Salesforce reads and writes are not made
here: the job queues them for a batch (salesforce_batches) and parks.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from crm_enrich import callbacks
from crm_enrich.logs import log
from crm_enrich.settings import Settings
from crm_enrich.worker import company as accounts  # Account jobs (company enrichment)
from crm_enrich.worker.celery_app import EVENT_SOURCES, REVERIFY_SOURCE
from crm_enrich.worker.clearout import ClearoutClient
from crm_enrich.worker.clodura import (
    CloduraClient, CreditsExhausted, DailyQuotaExceeded, ProviderError,
)
from crm_enrich.worker.field_map import FieldMap, fit_changes, is_blank, plan_changes
from crm_enrich.worker import reveals, verification
from crm_enrich.worker.async_steps import Ticket, await_result
from crm_enrich.worker.jobs import Job, load_tracked_hashes
from crm_enrich.worker.org_schema import OrgSchema
from crm_enrich.worker.provider_cache import AnswerPending, ProviderCache, canonical_key
from crm_enrich.worker.quota import Quota, QuotaExhausted, SpendingPaused
from crm_enrich.worker.ratelimit import RateLimited
from crm_enrich.worker.salesforce import SalesforceFailure
from crm_enrich.worker.salesforce_batches import BatchServices, queue_read, queue_write

PERSON_OBJECTS = {"Contact", "Lead"}
# What we need to know of a record to find the person, apply the map and
# recognise our own changes.
IDENTITY_FIELDS = {"Contact": ["FirstName", "LastName", "Email", "AccountId", "Account.Name", "Account.Website"],
                   "Lead": ["FirstName", "LastName", "Email", "Company", "Website"],
                   "Account": ["Name", "Website"]}
AUDIT_FIELDS = ["CreatedDate", "LastModifiedDate", "LastModifiedById"]
# A job in `writing` is finished by the batch flush; the awaiting states
# move on when their result is stored (callback or sweeper).
WRITING = "writing"
JOB_LOCK_TTL_MS = 300_000

# Take the job's lock if it is free or already ours: a redelivery of the
# same task (its worker died holding the lock) carries the same runner id.
_LOCK = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


@dataclass
class Services:
    settings: Settings
    clodura: CloduraClient
    field_map: FieldMap
    batches: BatchServices
    schema: OrgSchema
    cache: ProviderCache
    quota: Quota
    clearout: ClearoutClient | None = None

    @property
    def store(self):
        return self.batches.store


class RetryLater(Exception):
    """The task should run again later: after `countdown` seconds, or (None)
    after the task's own exponential backoff. A `wait` is not a failure
    (a rate-limit slot, another job's identical request, this job's lock)
    and does not use up the task's retries: in a long backlog a job may
    wait for its slot many times."""

    def __init__(self, reason: str, countdown: float | None = None, wait: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.countdown = countdown
        self.wait = wait


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


def field_sources(person: dict | None, verified: dict | None, now: str,
                  email: dict | None = None, phone: dict | None = None) -> dict:
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
    if email and email.get("email"):
        sources["email.revealed"] = email["email"]
    if phone and phone.get("phone"):
        sources["phone.mobile"] = phone["phone"]
    if verified:
        sources["verification.status"] = verified["status"]
        sources["verification.detail"] = verified.get("detail")
        sources["verification.verified_at"] = verified["verified_at"]
    return sources


def is_own_change(record: dict, integration_user_id: str | None) -> bool:
    """The record's latest change is our write-back (not its creation)."""
    return bool(
        integration_user_id
        and record.get("LastModifiedById", "")[:15] == integration_user_id[:15]
        and record.get("LastModifiedDate") not in (None, record.get("CreatedDate"))
    )


def fields_to_read(svc: Services, object_type: str) -> list[str]:
    return IDENTITY_FIELDS[object_type] + AUDIT_FIELDS + svc.field_map.target_fields(object_type)


def _current_record(svc: Services, job: Job, data: dict) -> dict | None:
    """The record as Salesforce has it, or None when a batched read was
    queued. Outbound Messages omit null fields, so unless the event carried
    every field we need, the record is read (200 to a query)."""
    if "record" in data:
        return data["record"]
    needed = fields_to_read(svc, job.object)
    if all(name in job.input for name in needed):
        return dict(job.input)
    queue_read(svc.batches, job.id, job.object, job.record_id, needed, urgent=job.source in EVENT_SOURCES)
    return None


def process_job(svc: Services, job_id: str, runner_id: str) -> str:
    """Advance a job as far as it can go now; answer its state."""
    store = svc.store
    lock_key = f"job:{job_id}:lock"
    if not store.r.eval(_LOCK, 1, lock_key, runner_id, JOB_LOCK_TTL_MS):
        raise RetryLater("another task is working on this job", 2.0, wait=True)
    try:
        return _process_locked(svc, job_id, runner_id)
    finally:
        store.r.delete(lock_key)


def _process_locked(svc: Services, job_id: str, runner_id: str) -> str:
    store = svc.store
    job = store.get(job_id)
    if job is None:
        log.warning("job.missing", job_id=job_id)
        return "missing"
    if job.final or job.state == WRITING:
        return job.state  # replayed task, or the batch flush will finish it
    store.count_attempt(job)
    try:
        return _advance(svc, job, runner_id)
    except RateLimited as exc:
        # Our own limiter said wait: hand the worker back, no error recorded.
        raise RetryLater("waiting for a rate-limit slot", exc.wait_s, wait=True) from None
    except AnswerPending as exc:
        raise RetryLater("the same request is in flight for another job", exc.wait_s, wait=True) from None
    except DailyQuotaExceeded as exc:
        svc.quota.quota_exhausted(exc.retry_after)
        store.transition(job, "deferred", last_error=str(exc))
    except QuotaExhausted as exc:
        store.transition(job, "deferred", last_error=str(exc))
    except CreditsExhausted as exc:
        svc.quota.credits_exhausted()
        store.transition(job, "paused", last_error=str(exc))
    except SpendingPaused as exc:
        store.transition(job, "paused", last_error=str(exc))
    except ProviderError as exc:
        if exc.retryable:
            store.transition(job, job.state, last_error=str(exc))
            raise RetryLater(str(exc), exc.retry_after) from None
        store.transition(job, "failed", last_error=str(exc))
    except SalesforceFailure as exc:
        if exc.retryable:
            store.transition(job, job.state, last_error=str(exc))
            raise RetryLater(str(exc)) from None
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


def _advance(svc: Services, job: Job, runner_id: str) -> str:
    store = svc.store
    if job.object == "Account":
        return accounts.advance_account(svc, job, runner_id)
    if job.object not in PERSON_OBJECTS:
        store.transition(job, "skipped", last_error=f"{job.object} enrichment is not supported yet")
        return job.state
    data = store.provider_data(job.id)

    record = _current_record(svc, job, data)
    if record is None:
        return job.state  # parked until the batched read resumes it
    if record.get("_missing"):
        store.transition(job, "skipped", last_error="record deleted or not visible")
        return job.state
    if job.source in EVENT_SOURCES and is_own_change(record, svc.batches.salesforce.integration_user_id):
        store.transition(job, "skipped", last_error="the change was our own write-back")
        return job.state

    reverify_only = job.source == REVERIFY_SOURCE
    person = None if reverify_only else _person(svc, job, data, record, runner_id)
    if not reverify_only:
        accounts.queue_account_job(svc, job, record, person)

    email, revealed = record.get("Email"), None
    if is_blank(email) and not reverify_only:
        revealed = _revealed(svc, job, data, "reveal_email", record, person)
        if revealed is not None and not revealed["email"] and svc.settings.clearout_finder:
            revealed = _found_by_clearout(svc, job, data, record, person, runner_id)
        if revealed is None:
            return _park(svc, job, "awaiting_email")
        email = revealed["email"]
    phone = None
    if not reverify_only and _wants_phone(svc, job.object, record):
        phone = _revealed(svc, job, data, "reveal_phone", record, person)
        if phone is None:
            return _park(svc, job, "awaiting_phone")

    verified = data.get("verification")
    if not is_blank(email) and verified is None:
        if job.state != "awaiting_verification":
            store.transition(job, "verifying")
        verified = verification.verify(svc, job, data, email, (revealed or {}).get("email_status"), runner_id)
        if verified is None:
            return _park(svc, job, "awaiting_verification")
        store.save_provider_data(job.id, "verification", verified)

    found_phone = bool(phone and phone["phone"])
    if not person and not verified and not found_phone:
        store.transition(job, "skipped", last_error="no match at Clodura and no email to verify")
        return job.state

    sources = field_sources(person, verified, verification.iso_now(), revealed, phone)
    if reverify_only:
        del sources["meta.enriched_at"]  # a new verdict is not a new enrichment
    store.save_provider_data(job.id, "outcome", {
        "matched": bool(person and person.get("personId")),
        "verdict": verified["status"] if verified else None,
        "email_revealed": bool(revealed and revealed["email"]),
        "phone_revealed": found_phone})
    return write_back(svc, job, record, sources)


def write_back(svc: Services, job: Job, record: dict, sources: dict) -> str:
    """What the field map says to change, fitted to the org's fields, queued
    for a batched write; done at once when nothing changes."""
    store = svc.store
    tracked = load_tracked_hashes(store, job.object, job.record_id)
    planned = plan_changes(svc.field_map, job.object, record, sources, tracked)
    fitted = fit_changes(planned, svc.schema.describe(job.object))
    changes = {name: value for name, value in fitted.items() if record.get(name) != value}
    if not changes:
        store.transition(job, "done", fields_written=[], last_error=None)
        return job.state
    tracked_fields = [r.field for r in svc.field_map.rules_for(job.object) if r.rule == "tracked"]
    queue_write(svc.batches, job.id, job.object, job.record_id, changes, tracked_fields,
                urgent=job.source in EVENT_SOURCES)
    store.transition(job, WRITING)
    return job.state


def _park(svc: Services, job: Job, state: str) -> str:
    if job.state != state:
        svc.store.transition(job, state)
    return job.state


def _person(svc: Services, job: Job, data: dict, record: dict, runner_id: str) -> dict | None:
    """The person Clodura matches, asked once per job (and per day, via the cache)."""
    if "person" in data:
        return data["person"]
    store = svc.store
    store.transition(job, "enriching")
    company = record.get("Account.Name") if job.object == "Contact" else record.get("Company")
    ids = enrich_identifiers(record, company)
    person, fetched_at = None, None
    if ids:
        svc.quota.check("enrich")
        answer = svc.cache.fetch("enrich", ids, lambda: svc.clodura.enrich_contact(ids), owner=runner_id,
                                 refresh=job.force)
        if not answer.from_cache:
            svc.quota.record_spend(answer.value["credits"], job.id)
        person, fetched_at = answer.value["person"], answer.fetched_at
    store.save_provider_data(job.id, "person", person, fetched_at)
    data["person"] = person
    return person


def _wants_phone(svc: Services, object_type: str, record: dict) -> bool:
    """Phones cost 10-20 credits: only when allowed and a mapped field is blank."""
    return svc.settings.reveal_phone and any(
        rule.source == "phone.mobile" and is_blank(record.get(rule.field))
        for rule in svc.field_map.rules_for(object_type))


def _revealed(svc: Services, job: Job, data: dict, step: str, record: dict, person: dict | None) -> dict | None:
    """The outcome of an email or phone reveal ({"email": None, ...} when
    nothing was found or nothing could be asked), or None while it is on
    its way. The same person revealed twice within a day costs once."""
    if step in data:
        return data[step]
    kind = step.removeprefix("reveal_")
    read = reveals.email_outcome if kind == "email" else reveals.phone_outcome
    ids = reveals.reveal_identifiers(record, person, with_names=kind == "email")
    if not ids:
        outcome = {kind: None, "reason": "no identifier Clodura could reveal by", "credits": 0}
    else:
        cached = None if job.force else svc.cache.get(canonical_key(step, ids))
        if cached:
            outcome = {**cached.value, "credits": 0}
        else:
            def send(url: str) -> Ticket:
                svc.quota.check(step)
                if kind == "email":
                    answer = svc.clodura.reveal_email(ids, url)
                else:
                    answer = svc.clodura.reveal_phone(ids, url, svc.settings.reveal_phone_via_partners)
                return Ticket(callbacks.provider_job_id(answer))

            body = await_result(svc, job, data, step, send)
            if body is None:
                return None
            outcome = read(body)
            svc.quota.record_spend(outcome["credits"], job.id)  # charged when the result is produced
            if outcome[kind]:
                svc.cache.put(step, ids, outcome)
    svc.store.save_provider_data(job.id, step, outcome)
    data[step] = outcome
    log.info("job.revealed", job_id=job.id, record_id=job.record_id, kind=kind, found=bool(outcome[kind]))
    return outcome


def _found_by_clearout(svc: Services, job: Job, data: dict, record: dict, person: dict | None,
                       runner_id: str) -> dict | None:
    """Clearout's email finder, for an address Clodura did not reveal; None
    while a search Clearout queued is still running (the sweeper brings the
    job back to ask for it)."""
    if "clearout_finder" in data:
        return data["clearout_finder"]
    name = " ".join(part for part in (record.get("FirstName"), record.get("LastName")) if not is_blank(part))
    # Clearout takes a domain or a company name.
    company = reveals.company_domain(record, person) or record.get("Account.Name") or record.get("Company")
    queued = data.get("clearout_finder_queue")
    if not name or is_blank(company):
        found = {"status": "not_found", "email": None}
    elif queued:
        found = asdict(svc.clearout.finder_status(queued["queue_id"]))
    else:
        found = svc.cache.fetch("clearout_finder", {"name": name, "company": company},
                                lambda: asdict(svc.clearout.find_email(name, company)),
                                keep=lambda value: value["status"] != "queued", owner=runner_id,
                                refresh=job.force).value
    if found["status"] == "queued":
        if not queued:
            queued = {"queue_id": found["queue_id"], "since": time.time()}
            svc.store.save_provider_data(job.id, "clearout_finder_queue", queued)
        if time.time() - queued["since"] < svc.settings.verify_give_up_after_s:
            return None
        found = {"status": "not_found", "email": None}
    outcome = {"email": found["email"], "email_status": None, "credits": 0,
               "provider": "clearout" if found["email"] else None,
               "reason": None if found["email"] else "not found by Clodura or Clearout"}
    svc.store.save_provider_data(job.id, "clearout_finder", outcome)
    data["clearout_finder"] = outcome
    log.info("job.found_by_clearout", job_id=job.id, record_id=job.record_id, found=bool(found["email"]))
    return outcome
