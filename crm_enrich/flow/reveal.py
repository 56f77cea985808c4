"""Revealing a person's email or mobile (docs/clodura.md#reveals): which
identifiers to ask with, reading either webhook variant (Standard or
Multi-Provider) into one outcome, and the steps that ask: Clodura's reveal
(result by callback) and, for an address Clodura cannot reveal, Clearout's
finder."""
from __future__ import annotations

import re
import time
from dataclasses import asdict
from typing import Any

from crm_enrich.field_map import is_blank
from crm_enrich.jobs.store import NOT_YET, Job, JobMemory
from crm_enrich.logs import log
from crm_enrich.providers.cache import canonical_key

from . import callbacks
from .awaiting import Ticket, await_result
from .services import Services

REVEAL_EMAIL, REVEAL_PHONE = "reveal_email", "reveal_phone"   # steps, and the job's slots
CLEAROUT_FINDER = "clearout_finder"
CLEAROUT_FINDER_QUEUE = "clearout_finder_queue"

FOUND = "completed"


def reveal_identifiers(record: dict, person: dict | None, with_names: bool) -> dict:
    """The strongest single identifier option the endpoint accepts: the
    person id, else a LinkedIn profile, else (email only) names + domain."""
    person = person or {}
    if person.get("personId"):
        return {"personId": person["personId"]}
    linkedin = person.get("linkedinUrl") or record.get("LinkedIn_URL__c")
    if linkedin is not None and not is_blank(linkedin) and "linkedin.com/in/" in linkedin.lower():
        return {"linkedinUrl": linkedin}
    domain = company_domain(record, person)
    if with_names and domain and not is_blank(record.get("FirstName")) and not is_blank(record.get("LastName")):
        return {"firstName": record["FirstName"], "lastName": record["LastName"], "companyDomain": domain}
    return {}


def company_domain(record: dict, person: dict | None) -> str | None:
    """The person's company domain: Clodura's, else the Lead's or the Account's website."""
    org = (person or {}).get("organisation") or {}
    return domain_of(org.get("domain") or record.get("Website") or record.get("Account.Website"))


def domain_of(value: str | None) -> str | None:
    """The bare domain of a website, URL, email address or domain."""
    if value is None or is_blank(value):
        return None
    text = value.strip().lower().rsplit("@", 1)[-1]
    text = re.sub(r"^[a-z][a-z0-9+.-]*://", "", text)
    text = re.split(r"[/?#:]", text, maxsplit=1)[0].rstrip(".")
    text = text.removeprefix("www.")
    return text if "." in text and " " not in text else None


def credits_of(body: dict) -> float:
    """creditsUsed is a number (Multi-Provider) or a dict of counters (Standard)."""
    used = body.get("creditsUsed")
    if isinstance(used, dict):
        return float(sum(v for v in used.values() if isinstance(v, (int, float))))
    return float(used) if isinstance(used, (int, float)) else 0.0


def _finder(body: dict) -> str:
    """Who found it: the Multi-Provider waterfall's finder, else Clodura."""
    for entry in body.get("providers") or []:
        if isinstance(entry, dict) and entry.get("result") == "found":
            return str(entry.get("provider") or "clodura")
    return "clodura"


def email_outcome(body: dict) -> dict:
    """{"email", "email_status", "provider", "credits", "reason"}; email None when none came."""
    email: Any = body.get("email")  # any JSON value: `found` checks it is an address
    found = str(body.get("status", "")).lower() == FOUND and isinstance(email, str) and "@" in email
    return {
        "email": email.strip() if found else None,
        "email_status": body.get("emailStatus") if found else None,
        "provider": _finder(body) if found else None,
        "credits": credits_of(body),
        "reason": None if found else (body.get("reason") or body.get("message") or body.get("status")),
    }


def phone_outcome(body: dict) -> dict:
    """{"phone", "provider", "credits", "reason"}: the first mobile, else the first number."""
    numbers = [n for n in body.get("phoneNumbers") or [] if isinstance(n, dict) and n.get("number")]
    numbers.sort(key=lambda n: n.get("type") != "mobile")
    found = str(body.get("status", "")).lower() == FOUND and numbers
    return {
        "phone": numbers[0]["number"] if found else None,
        "provider": (numbers[0].get("provider") or _finder(body)) if found else None,
        "credits": credits_of(body),
        "reason": None if found else (body.get("reason") or body.get("message") or body.get("status")),
    }


# -- the steps -------------------------------------------------------------------

def wants_phone(svc: Services, object_type: str, record: dict) -> bool:
    """Phones cost 10-20 credits: only when allowed and a mapped field is blank."""
    return svc.settings.reveal_phone and any(
        rule.source == "phone.mobile" and is_blank(record.get(rule.field))
        for rule in svc.field_map.rules_for(object_type))


def revealed(svc: Services, job: Job, memory: JobMemory, step: str, record: dict,
             person: dict | None) -> dict | None:
    """The outcome of an email or phone reveal ({"email": None, ...} when
    nothing was found or nothing could be asked), or None while it is on
    its way. The same person revealed twice within a day costs once."""
    kind = step.removeprefix("reveal_")

    def reveal():
        read = email_outcome if kind == "email" else phone_outcome
        ids = reveal_identifiers(record, person, with_names=kind == "email")
        if not ids:
            outcome: dict[str, Any] = {kind: None, "reason": "no identifier Clodura could reveal by", "credits": 0}
        else:
            cached = None if job.force else svc.cache.get(canonical_key(step, ids))
            if cached:
                outcome = {**cached.value, "credits": 0}
            else:
                def send(url: str) -> Ticket:
                    # Held until the callback says what it cost (or we give up waiting).
                    svc.quota.reserve(step, job.id, hold_s=svc.settings.callback_token_max_age_s)
                    try:
                        if kind == "email":
                            answer = svc.clodura.reveal_email(ids, url)
                        else:
                            answer = svc.clodura.reveal_phone(ids, url, svc.settings.reveal_phone_via_partners)
                    except BaseException:
                        svc.quota.release(step, job.id)
                        raise
                    return Ticket(callbacks.provider_job_id(answer))

                body = await_result(svc, job, memory, step, send)
                if body is None:
                    return NOT_YET
                outcome = read(body)
                svc.quota.settle(step, job.id, outcome["credits"])  # charged when the result is produced
                if outcome[kind]:
                    svc.cache.put(step, ids, outcome)
        log.info("job.revealed", job_id=job.id, record_id=job.record_id, kind=kind, found=bool(outcome[kind]))
        return outcome

    outcome = memory.remembered(step, reveal)
    return None if outcome is NOT_YET else outcome


def finder_query(record: dict, person: dict | None) -> tuple[str, str | None]:
    """What Clearout's finder is asked with: the full name, and the company
    domain or else its name (Clearout takes either)."""
    name = " ".join(part for part in (record.get("FirstName"), record.get("LastName"))
                    if part is not None and not is_blank(part))
    return name, company_domain(record, person) or record.get("Account.Name") or record.get("Company")


def found_by_clearout(svc: Services, job: Job, memory: JobMemory, record: dict, person: dict | None,
                      runner_id: str) -> dict | None:
    """Clearout's email finder, for an address Clodura did not reveal; None
    while a search Clearout queued is still running (the sweeper brings the
    job back to ask for it)."""

    def find():
        name, company = finder_query(record, person)
        queued = memory.get(CLEAROUT_FINDER_QUEUE)
        if not name or company is None or is_blank(company):
            found = {"status": "not_found", "email": None}
        elif queued:
            found = asdict(svc.clearout_client().finder_status(queued["queue_id"]))
        else:
            found = svc.cache.fetch(CLEAROUT_FINDER, {"name": name, "company": company},
                                    lambda: asdict(svc.clearout_client().find_email(name, company)),
                                    keep=lambda value: value["status"] != "queued", owner=runner_id,
                                    refresh=job.force).value
        if found["status"] == "queued":
            if not queued:
                queued = memory.keep(CLEAROUT_FINDER_QUEUE, {"queue_id": found["queue_id"], "since": time.time()})
            if time.time() - queued["since"] < svc.settings.verify_give_up_after_s:
                return NOT_YET
            found = {"status": "not_found", "email": None}
        log.info("job.found_by_clearout", job_id=job.id, record_id=job.record_id, found=bool(found["email"]))
        # The finder says whether the address is a role's or a business's (email.type).
        kind = "role" if found.get("role") else "business" if found.get("business") else None
        return {"email": found["email"], "email_status": None, "credits": 0, "email_type": kind,
                "provider": "clearout" if found["email"] else None,
                "reason": None if found["email"] else "not found by Clodura or Clearout"}

    outcome = memory.remembered(CLEAROUT_FINDER, find)
    return None if outcome is NOT_YET else outcome
