"""Company enrichment: Clodura's Organisation Enrich
(docs/clodura.md#organisation-enrich) written onto the Account through the [Account] section of the field map.

An Account has its own job. A Contact job with an AccountId queues one
(`queue_account_job`), at most one per Account a day, so fifty contacts of
one company cost one Organisation Enrich and one Account write; an Account's
own Outbound Message or event, or an operator's re-run, makes one too. The
job reads the Account (batched), finds the company at Clodura, enriches it
through the 24-hour response cache and queues a batched write, like a
person's job does.

Which company: the one the person enrichment found, if it agrees with the
Account (same domain as its Website or, without one, as the contact's
business email; or the same name); else the first /organisation/search match, by the Account's
Website domain, the contact's business email domain or the Account's name,
that agrees. Firmographics of the wrong company are worse than none, so an
Account nothing agrees with is skipped.
"""
from __future__ import annotations

import re
import time

from crm_enrich import keys
from crm_enrich.field_map import FieldMap, is_blank
from crm_enrich.jobs.state import SkipReason, State
from crm_enrich.jobs.store import Job, JobStore, Learnt
from crm_enrich.logs import log
from crm_enrich.salesforce.batches import expect_with

from . import signals
from .company_domain import COMPANY_DOMAIN, found_domain
from .company_domain import PROVIDER as DOMAIN_PROVIDER
from .record import RECORD, account_record, record_to_work_on
from .reveal import domain_of
from .services import Services
from .verify import iso_now
from .write_back import share_write_with, write_back, write_partner

# One Account enrichment a day for the contacts of an Account: later
# contacts of the same Account within a day find the same job.
ACCOUNT_REFRESH_S = 86_400
SPAWNED_BY = "for_contact_job"   # in a queued Account job's input
# The Account job's slots: the person's organisation as a hint, the
# organisation found for the Account, and Clodura's answer about it.
HINT, FOUND, ORGANISATION = "hint", "found", "organisation"

# The optional, paid parts of Organisation Enrich, and the field-map
# sources only they deliver: a component is asked for only when a mapped
# Account field needs it (and the settings allow it).
COMPONENT_FLAGS = {"technographics": "includeTechnographics", "funding": "includeFunding",
                   "acquisitions": "includeAcquisitions"}
SOURCE_COMPONENT = {"organisation.technologies": "technographics",
                    "organisation.funding_rounds": "funding",
                    "organisation.acquisitions": "acquisitions"}

# A contact's address at one of these says nothing about their company. Not
# exhaustive: a miss costs one search, whose answer must still agree.
FREEMAIL_DOMAINS = frozenset({
    "gmail.com", "googlemail.com", "yahoo.com", "yahoo.co.uk", "ymail.com", "hotmail.com",
    "hotmail.co.uk", "outlook.com", "live.com", "msn.com", "icloud.com", "me.com", "mac.com",
    "aol.com", "proton.me", "protonmail.com", "gmx.com", "gmx.de", "gmx.net", "web.de", "mail.com",
    "yandex.com", "yandex.ru", "zoho.com", "qq.com", "163.com", "126.com", "fastmail.com",
})
_LEGAL_SUFFIXES = frozenset({
    "inc", "incorporated", "llc", "ltd", "limited", "corp", "corporation", "co", "company", "plc",
    "gmbh", "ag", "sa", "sas", "bv", "nv", "ab", "as", "oy", "srl", "spa", "pty", "llp", "lp",
})
_AMOUNT = re.compile(r"^\$?\s*([0-9][0-9,]*(?:\.[0-9]+)?)\s*([KMB])?$", re.IGNORECASE)
_MULTIPLIER = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9}


# -- pure logic ----------------------------------------------------------------

def business_domain(email: str | None) -> str | None:
    domain = domain_of(email) if email and "@" in email else None
    return None if domain in FREEMAIL_DOMAINS else domain


def name_key(name: str | None) -> str | None:
    """A company name without case, punctuation or legal form:
    "Northwind Example, Inc." and "northwind example" are the same."""
    if name is None or is_blank(name):
        return None
    words = re.sub(r"[^a-z0-9]+", " ", name.lower().replace("&", " and ")).split()
    while len(words) > 1 and words[-1] in _LEGAL_SUFFIXES:
        words.pop()
    return " ".join(words) or None


def agrees(org: dict, account: dict, email_domain: str | None) -> bool:
    """Whether a Clodura organisation is this Account's company: same domain
    as the Account's Website (without one: the contact's business email), or
    same name. A contact filed under another company's Account must not
    carry their employer's data onto it."""
    org_domain = domain_of(org.get("domain"))
    if org_domain and org_domain == (domain_of(account.get("Website")) or email_domain):
        return True
    own_name = name_key(account.get("Name"))
    return own_name is not None and name_key(org.get("organisationName")) == own_name


def search_filters(account: dict, email_domain: str | None) -> dict | None:
    """The /organisation/search request for the best identifier we have."""
    domain = domain_of(account.get("Website")) or email_domain
    if domain:
        return {"domain": domain}
    if not is_blank(account.get("Name")):
        return {"organisationName": account["Name"].strip()}
    return None


def pick_organisation(found: list[dict], account: dict, email_domain: str | None) -> dict | None:
    return next((org for org in found if org.get("organisationId") and agrees(org, account, email_domain)),
                None)


def components_wanted(field_map: FieldMap, allowed: frozenset[str], object_type: str = "Account") -> frozenset[str]:
    needed = {SOURCE_COMPONENT[s] for s in field_map.sources_used(object_type) if s in SOURCE_COMPONENT}
    return frozenset(needed & allowed)


def component_warnings(field_map: FieldMap, allowed: frozenset[str]) -> list[str]:
    """Mapped Account fields that will stay empty because the settings do
    not allow the component their data comes in."""
    return [f"Account.{r.field} stays empty: CLODURA_ORG_COMPONENTS leaves out {SOURCE_COMPONENT[r.source]}"
            for r in field_map.rules_for("Account")
            if r.source in SOURCE_COMPONENT and SOURCE_COMPONENT[r.source] not in allowed]


def enrich_request(organisation_id: str, components: frozenset[str]) -> dict:
    return {"organisationId": organisation_id,
            **{flag: name in components for name, flag in COMPONENT_FLAGS.items()}}


def parse_amount(value) -> float | None:
    """Clodura's money strings ("45M", "1.2B", "$500K", "30,000,000") as a
    number; None when it is not a plain amount (never a guess)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = _AMOUNT.match(value.strip()) if isinstance(value, str) else None
    if not match:
        return None
    return float(match.group(1).replace(",", "")) * _MULTIPLIER[(match.group(2) or "").upper()]


def organisation_sources(org: dict, now: str) -> dict:
    """Field-map source values from an Organisation Enrich answer. Clodura
    gives revenue only as a band ("11M-100M"): it goes to a text field,
    never to AnnualRevenue as an invented figure."""
    financials = org.get("financials") or {}
    technographics = org.get("technographics") or {}
    rounds = [r for r in org.get("funding") or [] if isinstance(r, dict)]
    acquisitions = [a for a in org.get("acquisitions") or [] if isinstance(a, dict)]
    return {
        "meta.enriched_at": now,
        "organisation.id": org.get("organisationId"),
        "organisation.industry": org.get("industry"),
        "organisation.employee_count": org.get("employeeCount"),
        "organisation.revenue_band": org.get("revenue"),
        "organisation.website": f"https://{org['domain']}" if org.get("domain") else None,
        "organisation.technologies": technographics.get("technologies") or None,
        "organisation.total_funding": parse_amount(financials.get("totalFunding")),
        "organisation.funding_rounds": [
            " ".join(str(p) for p in (r.get("roundType"), r.get("amount"), r.get("currency"),
                                       f"({r['date']})" if r.get("date") else None) if p)
            for r in rounds] or None,
        "organisation.acquisitions": [a["organisationName"] for a in acquisitions
                                      if a.get("organisationName")] or None,
    }


# -- queuing an Account's job from a Contact's -----------------------------------

def company_dedupe_key(account_id: str) -> str:
    return keys.company_of_contacts(account_id[:15])


def queue_account_job(svc: Services, job: Job, record: dict, person: dict | None) -> None:
    """Give the Contact's Account a job of its own, unless it had one in the
    last day. Safe to call again when the Contact's task is replayed. The
    Account's job goes to the Contact's queue, so a backfill stays bulk work."""
    account_id = record.get("AccountId")
    if job.object != "Contact" or account_id is None or is_blank(account_id) or not svc.field_map.rules_for("Account"):
        return
    store = svc.store
    account_job, duplicate = store.create_unless_seen(
        company_dedupe_key(account_id), "Account", account_id, job.source, {SPAWNED_BY: job.id},
        dedupe_ttl_s=ACCOUNT_REFRESH_S)
    if duplicate:
        # The Account's own job (its Outbound Message's, say) may still be on
        # its way: its write waits for this Contact's, so the two share a call.
        share_write_with(svc, account_job.id, job.id)
        return
    org = (person or {}).get("organisation") or {}
    hint = {"organisation": {k: org.get(k) for k in ("organisationId", "organisationName", "domain")}
            if org.get("organisationId") else None,
            "email_domain": business_domain(record.get("Email"))}
    # The person's organisation is Clodura data: it expires with the answer it came in.
    store.save_provider_data(account_job.id, HINT, hint, _answered_at(store, job.id))
    seeded = account_record(svc, record)
    if seeded is not None:  # the Contact's read brought the Account: no read of its own
        store.save_provider_data(account_job.id, RECORD, seeded)
    # Part of a burst (a flood's Contacts), the Account's read and write
    # are awaited with its Contact's, so they share the burst's calls.
    expect_with(svc.batches, job.id, account_job.id)
    svc.batches.resume_job(account_job.id)
    store.mark_enqueued(account_job.id)
    log.info("job.queued", job_id=account_job.id, record_id=account_id, object="Account",
             source=job.source, for_job=job.id)


def account_job_of(svc: Services, record: dict) -> str | None:
    """The job that enriches this Contact's Account today, if any."""
    account_id = record.get("AccountId")
    if is_blank(account_id):
        return None
    found = svc.store.r.get(svc.store.dedupe_key(company_dedupe_key(str(account_id))))
    return str(found) if found else None


def _answered_at(store: JobStore, job_id: str) -> float | None:
    """When the oldest provider answer the job holds was fetched (its key
    expires 24 h after that)."""
    ttl = store.r.ttl(store.provider_key(job_id))
    return time.time() + ttl - store.provider_ttl_s if ttl > 0 else None


# -- an Account's job ------------------------------------------------------------

def advance_account(svc: Services, job: Job, runner_id: str) -> str:
    store = svc.store
    if not svc.field_map.rules_for("Account"):
        store.finish(job, State.SKIPPED, SkipReason.NO_ACCOUNT_FIELDS)
        return job.state
    # An Account's own event or re-run also stands for its contacts for a day.
    store.claim_dedupe_key(company_dedupe_key(job.record_id), job.id, ACCOUNT_REFRESH_S)
    memory = store.memory(job)

    # A job we queued for a Contact is not the Account's own change.
    record = record_to_work_on(svc, job, memory, own_change_counts=SPAWNED_BY not in job.input)
    if record is None:
        return job.state  # parked for the batched read, or skipped

    if ORGANISATION not in memory:
        store.transition(job, State.ENRICHING)
        found = memory.remembered(FOUND, lambda: Learnt(*find_organisation(
            svc, job, memory, record, memory.get(HINT) or {}, runner_id)))
        if not found:
            return _no_company(svc, job, record, memory)
        org, fetched_at = enriched_organisation(svc, job, found["organisationId"], "Account", runner_id)
        memory.keep(ORGANISATION, org, fetched_at)
    org = memory[ORGANISATION]
    if not org:
        store.finish(job, State.SKIPPED, SkipReason.ORGANISATION_GONE)
        return job.state

    sources = organisation_sources(org, iso_now())
    sources.update(signals.signal_sources(svc, job, memory, org.get("organisationId") or "", runner_id))
    return write_back(svc, job, record, sources, partner_job=_write_partner(svc, job))


def _write_partner(svc: Services, job: Job) -> str | None:
    """The Contact's job whose write this Account's shares: the one that
    queued it, or one that found it on its way (`queue_account_job`, or
    its record taken from this job's, crm_enrich/flow/record.py)."""
    return job.input.get(SPAWNED_BY) or write_partner(svc, job.id)


def _no_company(svc: Services, job: Job, record: dict, memory) -> str:
    """Clodura knows no company that agrees with the Account. A domain
    Clearout was sure of still fills a blank Website; anything else would
    be a guess."""
    domain = (memory.get(COMPANY_DOMAIN) or {}).get("domain")
    if domain and is_blank(record.get("Website")):
        return write_back(svc, job, record, {"organisation.website": f"https://{domain}"},
                          {"organisation.website": DOMAIN_PROVIDER}, partner_job=_write_partner(svc, job))
    svc.store.finish(job, State.SKIPPED, SkipReason.NO_COMPANY_MATCH)
    return job.state


def enriched_organisation(svc: Services, job: Job, organisation_id: str, object_type: str,
                          runner_id: str) -> tuple[dict | None, float]:
    """Clodura's Organisation Enrich of one company (None: unknown id), with
    the paid components the object's mapped fields need, through the
    24-hour cache; and when Clodura answered."""
    components = components_wanted(svc.field_map, svc.settings.org_components_allowed, object_type)
    request = enrich_request(organisation_id, components)
    with svc.quota.spending("org_enrich", job.id):
        answer = svc.cache.fetch("org_enrich", request, lambda: svc.clodura.enrich_organisation(request),
                                 owner=runner_id, refresh=job.force)
    svc.quota.settle("org_enrich", job.id, 0 if answer.from_cache else answer.value["credits"])
    return answer.value["organisation"], answer.fetched_at


def find_organisation(svc: Services, job: Job, memory, record: dict, hint: dict,
                      runner_id: str) -> tuple[dict | None, float | None]:
    """The person's organisation if it agrees with the record (an Account,
    or a Lead's company as {"Name", "Website"}), else the first search
    match that does (or None), and when Clodura said so. Without a Website
    or a contact's business email, the domain Clearout's autocomplete is
    sure of for the name stands in for the Website."""
    known_domain = hint.get("email_domain")
    if hint.get("organisation") and agrees(hint["organisation"], record, known_domain):
        return hint["organisation"], None
    if not known_domain and domain_of(record.get("Website")) is None:
        found = found_domain(svc, job, memory, record.get("Name"), runner_id)
        known_domain = found["domain"] if found else None
    filters = search_filters(record, known_domain)
    if filters is None:
        return None, None
    with svc.quota.spending("org_search", job.id):
        answer = svc.cache.fetch("org_search", filters, lambda: svc.clodura.search_organisations(filters),
                                 owner=runner_id, refresh=job.force)
    svc.quota.settle("org_search", job.id, 0 if answer.from_cache else answer.value["credits"])
    found = pick_organisation(answer.value["organisations"], record, known_domain)
    if found:
        found = {k: found.get(k) for k in ("organisationId", "organisationName", "domain")}
    return found, answer.fetched_at
