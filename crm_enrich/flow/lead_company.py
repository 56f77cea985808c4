"""A Lead's company. A Lead carries its company's fields itself (Company,
Website, Industry, NumberOfEmployees), with no Account job to fill them:
when Clodura's person match names the company, its organisation fills
them, as before. When it does not (Clodura does not know the person, or
spells the company differently), the Lead's own Website, or without one the
domain Clearout's autocomplete is sure of for its Company
(flow/company_domain.py), finds the company at Clodura (organisation
search by domain, then Organisation Enrich through the 24-hour cache, so
many Leads of one company cost one call a day). The domain also lets a
missing email be revealed by name + domain, and fills a blank Website.
"""
from __future__ import annotations

from crm_enrich.field_map import is_blank
from crm_enrich.jobs.store import Job, JobMemory, Learnt

from . import account
from .company_domain import PROVIDER as DOMAIN_PROVIDER
from .company_domain import found_domain
from .reveal import domain_of
from .services import Services

LEAD_ORGANISATION = "lead_organisation"   # the job's slot: Clodura's organisation, or None


def wants_organisation(svc: Services) -> bool:
    """Whether the Lead map uses any organisation data beyond its website."""
    return any(s.startswith("organisation.") and s != "organisation.website"
               for s in svc.field_map.sources_used("Lead"))


def lead_company(svc: Services, job: Job, memory: JobMemory, record: dict, person: dict | None,
                 runner_id: str) -> dict:
    """{"domain": the company's domain or None, "found_by": "clearout" when
    the autocomplete gave it, "organisation": Clodura's or None}; {} when the
    person match already named the company (or this is not a Lead)."""
    placed = ((person or {}).get("organisation") or {}).get("domain")
    # Clodura's own match names the company with its firmographics; a person
    # found by the waterfall names only its domain, so the organisation is
    # still looked up by that domain.
    if job.object != "Lead" or (placed and not (person or {}).get("found_by")):
        return {}
    domain, found_by = domain_of(record.get("Website")) or placed, None
    if domain is None:
        found = found_domain(svc, job, memory, record.get("Company"), runner_id)
        if found is None:
            return {}
        domain, found_by = found["domain"], DOMAIN_PROVIDER
    organisation = None
    if wants_organisation(svc):
        organisation = memory.remembered(LEAD_ORGANISATION, lambda: _organisation(
            svc, job, memory, {"Name": record.get("Company"), "Website": domain}, runner_id))
    return {"domain": domain, "found_by": found_by, "organisation": organisation}


def _organisation(svc: Services, job: Job, memory: JobMemory, company: dict, runner_id: str) -> Learnt:
    found, searched_at = account.find_organisation(svc, job, memory, company, {}, runner_id)
    if not found:
        return Learnt(None, searched_at)
    organisation, enriched_at = account.enriched_organisation(svc, job, found["organisationId"], "Lead", runner_id)
    return Learnt(organisation, min(t for t in (searched_at, enriched_at) if t is not None))


def with_company_domain(record: dict, company: dict) -> dict:
    """The record as the reveal and finder steps should see it: with the
    company's domain as its Website when it had none (only for asking; the
    write-back compares with the record as Salesforce has it)."""
    if company.get("domain") and is_blank(record.get("Website")):
        return {**record, "Website": company["domain"]}
    return record


def company_sources(company: dict, now: str) -> tuple[dict, dict[str, str]]:
    """The field-map sources the company gives, and who gave those that
    are not Clodura's (a Website from the autocomplete)."""
    sources: dict = {}
    if company.get("organisation"):
        sources = {k: v for k, v in account.organisation_sources(company["organisation"], now).items()
                   if k != "meta.enriched_at"}
    providers: dict[str, str] = {}
    if not sources.get("organisation.website") and company.get("domain"):
        sources["organisation.website"] = f"https://{company['domain']}"
        if company.get("found_by"):
            providers["organisation.website"] = company["found_by"]
    return sources, providers
