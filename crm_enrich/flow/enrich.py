"""Finding the person at Clodura (/cleanup/enrich), and turning what the
providers said into the field map's sources."""
from __future__ import annotations

from typing import Any

from crm_enrich.field_map import is_blank
from crm_enrich.jobs.state import State
from crm_enrich.jobs.store import Job, JobMemory, Learnt

from .services import Services

PERSON = "person"   # the job's slot for Clodura's match (None: nobody)


def enrich_identifiers(record: dict, company_name: str | None) -> dict:
    """The strongest identifiers we have (docs/clodura.md#person-enrich)."""
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


def find_person(svc: Services, job: Job, memory: JobMemory, record: dict, runner_id: str) -> dict | None:
    """The person Clodura matches, asked once per job (and per day, via the cache)."""

    def ask() -> Learnt:
        svc.store.transition(job, State.ENRICHING)
        company = record.get("Account.Name") if job.object == "Contact" else record.get("Company")
        ids = enrich_identifiers(record, company)
        if not ids:
            return Learnt(None)
        with svc.quota.spending("enrich", job.id):
            answer = svc.cache.fetch("enrich", ids, lambda: svc.clodura.enrich_contact(ids), owner=runner_id,
                                     refresh=job.force)
        svc.quota.settle("enrich", job.id, 0 if answer.from_cache else answer.value["credits"])
        return Learnt(answer.value["person"], answer.fetched_at)

    return memory.remembered(PERSON, ask)


def field_sources(person: dict | None, verified: dict | None, now: str,
                  email: dict | None = None, phone: dict | None = None) -> dict:
    sources: dict[str, Any] = {"meta.enriched_at": now}
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
