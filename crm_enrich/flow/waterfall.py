"""The waterfall for people Clodura's enrich does not match: other sources
asked in turn (WATERFALL_STEPS) until one answers with someone who agrees
with the record.

- clearout_email: Clearout's reverse lookup by the record's email
  (docs/clearout.md#reverse-lookup; 4 Clearout credits for a person, 2 for
  a role address, nothing when nobody is found).
- clearout_linkedin: the same by the record's LinkedIn profile URL.
- clodura_search: Clodura's people search by first and last name and the
  company (docs/clodura.md#people-search; 1 credit per record returned, so
  we ask for one page of one).

An answer agrees when it names the same person (first and last name,
without case, accents or punctuation) at the same company: the company's
domain is the record's business email domain or its (Account's) website;
a record with neither compares the company's name. Anything else, a role
address included, is a weak match: never written, and the next step is
tried. The first answer that agrees stands in for Clodura's match, in the
same shape (so title, LinkedIn URL and the company's website fill the same
fields); a Clearout answer has no Clodura person id, so none is written.

Each step is remembered on the job (JobMemory) and its answer cached for a
day like every provider answer, so a replay pays nothing twice; each
appears in the job view's steps with its outcome.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from crm_enrich import counters
from crm_enrich.field_map import is_blank
from crm_enrich.jobs.store import Job, JobMemory
from crm_enrich.logs import log
from crm_enrich.providers.clearout_lookup import reverse_lookup_email, reverse_lookup_linkedin
from crm_enrich.providers.clodura_search import search_people

from .account import business_domain, name_key
from .reveal import domain_of
from .services import Services

WATERFALL = "waterfall"   # the job's slot: {"person": the match or None, "found_by": its step}
AGREES, WEAK, NOT_FOUND, NOT_ASKED = "agrees", "weak", "not_found", "not_asked"
# Person sources a Clearout answer fills, for the change log's provider column.
CLEAROUT_FILLS = ("person.title", "person.linkedin_url", "organisation.website")


def slot(step: str) -> str:
    return f"{WATERFALL}:{step}"


# -- the agreement rule (pure) ---------------------------------------------------

def name_words(text: str | None) -> list[str]:
    """A name without case, accents or punctuation: "José O'Brien" -> ["jose", "obrien"]."""
    if text is None or is_blank(text):
        return []
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z\s-]", "", plain).replace("-", " ").split()


def same_name(record: dict, first: str | None, last: str | None, full: str | None = None) -> bool:
    """Whether a candidate's name (first and last, or a full name) is the record's."""
    own_first, own_last = name_words(record.get("FirstName")), name_words(record.get("LastName"))
    theirs = name_words(first) + name_words(last) if (first or last) else name_words(full)
    if not own_last or not theirs:
        return False
    if own_first:
        return theirs == own_first + own_last
    return theirs[-len(own_last):] == own_last   # a record with a last name only


def record_domains(record: dict) -> set[str]:
    """The company domains the record itself states: its business email's,
    its website's (a Lead) and its Account's website's."""
    found = {business_domain(record.get("Email")), domain_of(record.get("Website")),
             domain_of(record.get("Account.Website"))}
    return {d for d in found if d}


def record_company(record: dict) -> str | None:
    name = record.get("Account.Name") or record.get("Company")
    return None if name is None or is_blank(name) else str(name)


def same_company(record: dict, domain: str | None, company_name: str | None) -> bool:
    own = record_domains(record)
    theirs = domain_of(domain)
    if own:
        return theirs is not None and any(theirs == d or theirs.endswith("." + d) or d.endswith("." + theirs)
                                          for d in own)
    own_name = name_key(record_company(record))
    return own_name is not None and name_key(company_name) == own_name


def agreement(record: dict, candidate: dict | None) -> str:
    """AGREES, WEAK or NOT_FOUND for a candidate {"type", "first", "last",
    "name", "domain", "company"}."""
    if candidate is None:
        return NOT_FOUND
    if candidate.get("type", "person") != "person":
        return WEAK   # a role address (info@...) is nobody in particular
    named = same_name(record, candidate.get("first"), candidate.get("last"), candidate.get("name"))
    return AGREES if named and same_company(record, candidate.get("domain"), candidate.get("company")) else WEAK


# -- the answers, as Clodura's person shape ----------------------------------------

def clearout_candidate(lead: dict | None) -> dict | None:
    if lead is None:
        return None
    return {"type": lead.get("type"), "name": lead.get("name"), "domain": lead.get("company_domain"),
            "company": lead.get("company_name")}


def clearout_person(lead: dict) -> dict:
    return {"personId": None, "personTitle": lead.get("title"), "linkedinUrl": lead.get("linkedin_url"),
            "functional": [], "source": "clearout",
            "organisation": {"organisationId": None, "organisationName": lead.get("company_name"),
                             "domain": domain_of(lead.get("company_domain"))}}


def clodura_candidate(found: dict | None) -> dict | None:
    if found is None:
        return None
    return {"type": "person", "first": found.get("firstName"), "last": found.get("lastName"),
            "domain": found.get("domain"), "company": found.get("organisationName")}


def clodura_person(found: dict) -> dict:
    return {"personId": found.get("personId"), "personTitle": found.get("personTitle"),
            "linkedinUrl": found.get("linkedinUrl"), "functional": found.get("functional") or [],
            "seniority": found.get("seniority") or [], "source": "clodura",
            "organisation": {"organisationId": found.get("organisationId"),
                             "organisationName": found.get("organisationName"),
                             "domain": domain_of(found.get("domain"))}}


def providers_of(person: dict | None) -> dict[str, str]:
    """Who gave the person's values, where it is not Clodura."""
    if person and person.get("source") == "clearout":
        return dict.fromkeys(CLEAROUT_FILLS, "clearout")
    return {}


# -- the steps ---------------------------------------------------------------------

def linkedin_profile(record: dict) -> str | None:
    url = record.get("LinkedIn_URL__c")
    return url.strip() if isinstance(url, str) and "linkedin.com/in/" in url.lower() else None


def search_filters(record: dict) -> dict | None:
    """Name and company for Clodura's people search: the company's domain
    when the record states one, else its name."""
    if is_blank(record.get("FirstName")) or is_blank(record.get("LastName")):
        return None
    names = {"firstName": record["FirstName"].strip(), "lastName": record["LastName"].strip()}
    domains = sorted(record_domains(record))
    if domains:
        return {**names, "companyDomain": domains}
    company = record_company(record)
    return {**names, "organisationName": [company.strip()]} if company else None


def _ask_clearout(svc: Services, job: Job, record: dict, runner_id: str, step: str) -> dict:
    if step == "clearout_email":
        email = record.get("Email")
        if email is None or is_blank(email):
            return {"outcome": NOT_ASKED}
        request, call = {"email": str(email).strip()}, lambda: reverse_lookup_email(svc.clearout_client(),
                                                                                  str(email).strip())
    else:
        url = linkedin_profile(record)
        if url is None:
            return {"outcome": NOT_ASKED}
        request, call = {"url": url}, lambda: reverse_lookup_linkedin(svc.clearout_client(), url)
    answer = svc.cache.fetch(f"clearout_reverse_{step.removeprefix('clearout_')}", request, call,
                             owner=runner_id, refresh=job.force)
    lead = answer.value["lead"]
    outcome = agreement(record, clearout_candidate(lead))
    return {"outcome": outcome, "person": clearout_person(lead) if outcome == AGREES else None,
            "clearout_credits": 0 if answer.from_cache else answer.value["credits"]}


def _ask_clodura(svc: Services, job: Job, record: dict, runner_id: str) -> dict:
    filters = search_filters(record)
    if filters is None:
        return {"outcome": NOT_ASKED}
    with svc.quota.spending("people_search", job.id):
        answer = svc.cache.fetch("people_search", filters, lambda: search_people(svc.clodura, filters),
                                 owner=runner_id, refresh=job.force)
    svc.quota.settle("people_search", job.id, 0 if answer.from_cache else answer.value["credits"])
    people = answer.value["people"]
    found = people[0] if people else None
    outcome = agreement(record, clodura_candidate(found))
    return {"outcome": outcome, "person": clodura_person(found) if found and outcome == AGREES else None}


def _step(svc: Services, job: Job, memory: JobMemory, record: dict, runner_id: str, step: str) -> dict:
    """One step's outcome, asked once per job (and per day, via the cache)."""

    def ask() -> dict:
        if step == "clodura_search":
            result = _ask_clodura(svc, job, record, runner_id)
        else:
            result = _ask_clearout(svc, job, record, runner_id, step)
        if result["outcome"] != NOT_ASKED:   # nothing to ask with: no step to show
            svc.store.note_step(job, step, result["outcome"])
        if result.get("clearout_credits"):
            svc.store.r.hincrbyfloat(svc.store.job_key(job.id), "clearout_credits", result["clearout_credits"])
            counters.incr(svc.store.r, "provider_credits", result["clearout_credits"], provider="clearout")
        log.info("job.waterfall_step", job_id=job.id, record_id=job.record_id, step=step,
                 outcome=result["outcome"])
        return result

    return memory.remembered(slot(step), ask)


def found_person(svc: Services, job: Job, memory: JobMemory, record: dict, runner_id: str,
                 enriched: dict | None) -> dict | None:
    """The first waterfall answer that agrees with the record, as a person
    (Clodura's shape), or None. `enriched`: what enrich found (nobody, or
    only the organisation, whose firmographics are kept when the match works
    at the same company)."""
    steps = svc.settings.waterfall
    if not steps or (enriched and enriched.get("personId")):
        return None

    def walk() -> dict:
        for step in steps:
            result = _step(svc, job, memory, record, runner_id, step)
            if result["outcome"] == AGREES:
                return {"person": result["person"], "found_by": step}
        return {"person": None, "found_by": None}

    found = memory.remembered(WATERFALL, walk)
    person = found["person"]
    if person is None:
        return None
    org = (enriched or {}).get("organisation") or {}
    if org.get("organisationId") and not person["organisation"].get("organisationId") \
            and domain_of(org.get("domain")) == person["organisation"].get("domain"):
        person = {**person, "organisation": org}
    return {**person, "found_by": found["found_by"]}


# What a step may cost at most, for the dry run (operations/estimate.py):
# (price table entry, whether the record lets the step be asked).
STEP_PRICES: dict[str, tuple[str, Callable[[dict], bool]]] = {
    "clearout_email": ("clearout_reverse_email", lambda record: not is_blank(record.get("Email"))),
    "clearout_linkedin": ("clearout_reverse_linkedin", lambda record: linkedin_profile(record) is not None),
    "clodura_search": ("people_search", lambda record: search_filters(record) is not None),
}
