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

from . import account, clearout_lists, email_type, verify, waterfall
from .enrich import field_sources, find_person
from .lead_company import company_sources, lead_company, with_company_domain
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
        # Nobody at Clodura: the waterfall's other sources, if any are on.
        person = waterfall.found_person(svc, job, memory, record, runner_id, person) or person
        account.queue_account_job(svc, job, record, person)
    # A Lead's company when the person match did not name it (its domain may come from Clearout).
    company = {} if reverify_only else lead_company(svc, job, memory, record, person, runner_id)
    asking = with_company_domain(record, company)   # the record as the reveal steps see it

    email, found_email = record.get("Email"), None
    if is_blank(email) and not reverify_only:
        found_email = revealed(svc, job, memory, REVEAL_EMAIL, asking, person)
        if found_email is not None and not found_email["email"] and svc.settings.clearout_finder:
            listed = clearout_lists.found_on_list(svc, job, memory, asking, person)  # a large run's list
            if isinstance(listed, clearout_lists.OnList):
                return _park(svc, job, State.AWAITING_LIST)
            found_email = listed or found_by_clearout(svc, job, memory, asking, person, runner_id)
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
    company_found = bool(company.get("organisation") or company.get("found_by"))
    if not person and not verified and not found_phone and not company_found:
        store.finish(job, State.SKIPPED, SkipReason.NO_MATCH)
        return job.state

    sources = field_sources(person, verified, verify.iso_now(), found_email, phone)
    from_company, company_providers = company_sources(company, verify.iso_now())
    sources.update({k: v for k, v in from_company.items() if sources.get(k) is None})
    kind = email_type.email_type(svc, job, memory, None if is_blank(email) else str(email), verified,
                                 found_email, runner_id, may_check=not reverify_only)
    if kind:
        sources[email_type.SOURCE] = kind   # only Clearout's answers carry it
    if reverify_only:
        del sources["meta.enriched_at"]  # a new verdict is not a new enrichment
    memory.keep(OUTCOME, {
        "matched": bool(person and person.get("personId")),
        "verdict": verified["status"] if verified else None,
        "email_revealed": bool(found_email and found_email["email"]),
        "email_found_by": "clearout" if found_email and found_email.get("provider") == "clearout" else None,
        "phone_revealed": found_phone,
        **({"company_domain_found": True} if company.get("found_by") else {}),
        # Which waterfall step found the person Clodura did not match (only when one did).
        **({"person_found_by": person["found_by"]} if person and person.get("found_by") else {})})
    partner = account.account_job_of(svc, record) if job.object == "Contact" else None
    return write_back(svc, job, record, sources,
                      {**waterfall.providers_of(person), **source_providers(found_email, verified, phone),
                       **company_providers, email_type.SOURCE: "clearout"},
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
