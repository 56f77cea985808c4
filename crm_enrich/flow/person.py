"""A Contact's or Lead's enrichment, step by step: read the record, find
the person, queue their Account's job, reveal a missing email (and phone,
when asked), verify the email, write back.

Every step's answer is kept on the job before the next (JobMemory), so a
replayed task goes on where the last one stopped and pays nothing twice.
A step whose answer comes later parks the job in an awaiting state; the
callback or the sweeper brings it back here.
"""
from __future__ import annotations

from crm_enrich.field_map import is_blank
from crm_enrich.jobs.state import SkipReason, State
from crm_enrich.jobs.store import Job
from crm_enrich.queues import REVERIFY_SOURCE

from . import account, clearout_lists, verify
from .enrich import field_sources, find_person
from .record import record_to_work_on
from .reveal import REVEAL_EMAIL, REVEAL_PHONE, found_by_clearout, revealed, wants_phone
from .services import Services
from .write_back import write_back

VERIFICATION, OUTCOME = "verification", "outcome"   # the job's slots


def advance_person(svc: Services, job: Job, runner_id: str) -> str:
    store = svc.store
    memory = store.memory(job)
    record = record_to_work_on(svc, job, memory)
    if record is None:
        return job.state  # parked for the batched read, or skipped

    reverify_only = job.source == REVERIFY_SOURCE
    person = None if reverify_only else find_person(svc, job, memory, record, runner_id)
    if not reverify_only:
        account.queue_account_job(svc, job, record, person)

    email, found_email = record.get("Email"), None
    if is_blank(email) and not reverify_only:
        found_email = revealed(svc, job, memory, REVEAL_EMAIL, record, person)
        if found_email is not None and not found_email["email"] and svc.settings.clearout_finder:
            listed = clearout_lists.found_on_list(svc, job, memory, record, person)  # a large run's list
            if isinstance(listed, clearout_lists.OnList):
                return _park(svc, job, State.AWAITING_LIST)
            found_email = listed or found_by_clearout(svc, job, memory, record, person, runner_id)
        if found_email is None:
            return _park(svc, job, State.AWAITING_EMAIL)
        email = found_email["email"]
    phone = None
    if not reverify_only and wants_phone(svc, job.object, record):
        phone = revealed(svc, job, memory, REVEAL_PHONE, record, person)
        if phone is None:
            return _park(svc, job, State.AWAITING_PHONE)

    verified = memory.get(VERIFICATION)
    if email is not None and not is_blank(email) and verified is None:
        if job.state != State.AWAITING_VERIFICATION:
            store.transition(job, State.VERIFYING)
        verified = verify.verify(svc, job, memory, email, (found_email or {}).get("email_status"), runner_id)
        if isinstance(verified, clearout_lists.OnList):
            return _park(svc, job, State.AWAITING_LIST)
        if verified is None:
            return _park(svc, job, State.AWAITING_VERIFICATION)
        memory.keep(VERIFICATION, verified)

    found_phone = bool(phone and phone["phone"])
    if not person and not verified and not found_phone:
        store.finish(job, State.SKIPPED, SkipReason.NO_MATCH)
        return job.state

    sources = field_sources(person, verified, verify.iso_now(), found_email, phone)
    if reverify_only:
        del sources["meta.enriched_at"]  # a new verdict is not a new enrichment
    memory.keep(OUTCOME, {
        "matched": bool(person and person.get("personId")),
        "verdict": verified["status"] if verified else None,
        "email_revealed": bool(found_email and found_email["email"]),
        "email_found_by": "clearout" if found_email and found_email.get("provider") == "clearout" else None,
        "phone_revealed": found_phone})
    partner = account.account_job_of(svc, record) if job.object == "Contact" else None
    return write_back(svc, job, record, sources, source_providers(found_email, verified, phone),
                      verified_email=email if verified else None, partner_job=partner)


def source_providers(email: dict | None, verified: dict | None, phone: dict | None) -> dict[str, str]:
    """Who gave each value that is not Clodura's own: the change log names them."""
    providers = {}
    if email and email.get("provider"):
        providers["email.revealed"] = email["provider"]
    if phone and phone.get("provider"):
        providers["phone.mobile"] = phone["provider"]
    if verified and verified.get("provider"):
        providers.update({f"verification.{part}": verified["provider"]
                          for part in ("status", "detail", "verified_at")})
    return providers


def _park(svc: Services, job: Job, state: State) -> str:
    if job.state != state:
        svc.store.transition(job, state)
    return job.state
