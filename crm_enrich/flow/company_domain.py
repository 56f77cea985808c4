"""A domain for a company name: Clearout's company autocomplete
(docs/clearout.md#company-autocomplete), free, asked once per job and,
through the 24-hour cache, once a day per name.

Only the best suggestion is taken, and only when Clearout is at least
COMPANY_DOMAIN_MIN_CONFIDENCE sure of it: the domain decides whose
firmographics land on the record and at which company a person's email is
looked for, so a weak guess is worse than none. A Lead with a Company and
no Website uses it (flow/lead_company.py), and so does an Account without a
Website (flow/account.py).
"""
from __future__ import annotations

from crm_enrich.field_map import is_blank
from crm_enrich.jobs.store import Job, JobMemory, Learnt
from crm_enrich.logs import log
from crm_enrich.providers.company_autocomplete import best_suggestion

from .services import Services

COMPANY_DOMAIN = "company_domain"   # the step (cache endpoint) and the job's slot
PROVIDER = "clearout"               # who found it, for the change log


def lookup_query(company_name: str | None) -> str | None:
    """The name as we ask for it: trimmed, inner spaces collapsed."""
    if company_name is None or is_blank(company_name):
        return None
    return " ".join(str(company_name).split())[:200]


def found_domain(svc: Services, job: Job, memory: JobMemory, company_name: str | None,
                 runner_id: str) -> dict | None:
    """{"domain", "name", "confidence"} of the best suggestion for the
    company, or None (off, no name, nothing confident enough, or Clearout
    refused for the day: that answer is not cached, so a later job asks
    again)."""
    if COMPANY_DOMAIN in memory:
        return memory[COMPANY_DOMAIN]
    query = lookup_query(company_name)
    client = svc.company_autocomplete
    if query is None or client is None or not svc.settings.company_domain_lookup:
        return None

    def ask() -> Learnt:
        answer = svc.cache.fetch(COMPANY_DOMAIN, {"query": query}, lambda: client.suggestions(query),
                                 keep=lambda value: not value.get("refused"), owner=runner_id, refresh=job.force)
        best = best_suggestion(answer.value["suggestions"], svc.settings.company_domain_min_confidence)
        top = answer.value["suggestions"][0]["confidence"] if answer.value["suggestions"] else None
        log.info("job.company_domain", job_id=job.id, record_id=job.record_id, found=best is not None,
                 best_confidence=top, refused=bool(answer.value.get("refused")))
        return Learnt(dict(best) if best else None, answer.fetched_at)

    return memory.remembered(COMPANY_DOMAIN, ask)
