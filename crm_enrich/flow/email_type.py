"""What kind of address a record's email is, for a field mapped from
`email.type`: `business`, `free` (webmail), `role` (info@, sales@) or
`disposable`.

Free first: the flags a provider's answer already carries (Clearout's
verify answers say disposable / free / role; its finder says role /
business). Clodura's answers carry none, so with EMAIL_TYPE_CHECKS on
Clearout's single-attribute checks answer instead (docs/clearout.md#attribute-checks):
disposable, then role, then free, stopping at the first "yes"; none of
them means business. Each check costs CLEAROUT_ATTRIBUTE_CHECK_CREDITS
(price table: 1) and is asked only when a mapped field wants the type, for
an address that does not bounce, once per job and once a day per address.
"""
from __future__ import annotations

import functools

from crm_enrich import counters
from crm_enrich.jobs.store import Job, JobMemory
from crm_enrich.logs import log
from crm_enrich.providers.clearout_lookup import Attribute, attribute_check
from crm_enrich.providers.quota import COSTS

from .services import Services

SOURCE = "email.type"
EMAIL_TYPE = "email_type"   # the job's slot
TYPES = ("business", "free", "role", "disposable")
# The checks in the order they are asked: the worst kind first.
CHECKS: tuple[Attribute, ...] = ("disposable", "role", "free")


def wanted(svc: Services, object_type: str) -> bool:
    return SOURCE in svc.field_map.sources_used(object_type)


def check_credits(svc: Services) -> float:
    price = svc.settings.clearout_attribute_check_credits
    return COSTS["clearout_attribute_check"] if price is None else price


def email_type(svc: Services, job: Job, memory: JobMemory, email: str | None,
               verified: dict | None, found_email: dict | None, runner_id: str,
               may_check: bool = True) -> str | None:
    """The address's type, or None (not mapped, not known, not allowed to
    ask). `may_check`: false for a re-verification, which is about whether
    the address still works, not what kind it is (so it pays for no check)."""
    if not email or not wanted(svc, job.object):
        return None
    for answer in (verified, found_email):
        if answer and answer.get("email_type") in TYPES:
            return answer["email_type"]
    if not (may_check and svc.settings.email_type_checks) or (verified and verified.get("status") == "invalid"):
        return None

    def ask() -> str:
        kind = "business"
        for attribute in CHECKS:
            answer = svc.cache.fetch(f"clearout_check_{attribute}", {"email": email},
                                     functools.partial(attribute_check, svc.clearout_client(), attribute, email),
                                     owner=runner_id, refresh=job.force)
            if not answer.from_cache:
                credits = check_credits(svc)
                svc.store.r.hincrbyfloat(svc.store.job_key(job.id), "clearout_credits", credits)
                counters.incr(svc.store.r, "provider_credits", credits, provider="clearout")
            if answer.value:
                kind = attribute
                break
        svc.store.note_step(job, "email_type_checks", kind)
        log.info("job.email_type_checked", job_id=job.id, record_id=job.record_id, email_type=kind)
        return kind

    return memory.remembered(EMAIL_TYPE, ask)
