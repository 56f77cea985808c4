"""Revealing a person's email or mobile (contracts/clodura.md §7.3, §8.3,
§8.4): which identifiers to ask with, and reading either webhook variant
(Standard or Multi-Provider) into one outcome. Pure logic."""
from __future__ import annotations

import re

from crm_enrich.worker.field_map import is_blank

FOUND = "completed"


def reveal_identifiers(record: dict, person: dict | None, with_names: bool) -> dict:
    """The strongest single identifier option the endpoint accepts: the
    person id, else a LinkedIn profile, else (email only) names + domain."""
    person = person or {}
    if person.get("personId"):
        return {"personId": person["personId"]}
    linkedin = person.get("linkedinUrl") or record.get("LinkedIn_URL__c")
    if not is_blank(linkedin) and "linkedin.com/in/" in linkedin.lower():
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
    if is_blank(value):
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
    email = body.get("email")
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
