"""Clearout's reverse lookups and single-attribute checks
(docs/clearout.md#reverse-lookup, docs/clearout.md#attribute-checks),
through the ClearoutClient's limiter, breaker and error rules.

Answers are plain dicts, so they go into the response cache and a job's
memory as they are.
"""
from __future__ import annotations

from typing import Literal

from crm_enrich.providers.clearout import READ_MARGIN_S, ClearoutClient

# What a lookup costs (docs/clearout.md#credits): a person 4, a role address
# 2, nothing found nothing. The answer does not say; the lead's type does.
LOOKUP_CREDITS = {"person": 4, "role": 2}
ATTRIBUTE_TIMEOUT_MS = 30_000   # Clearout's default is 90 s; a worker should not hang that long
ATTRIBUTE_TIMEOUT_MAX_MS = 110_000
# endpoint -> the flag its answer carries
ATTRIBUTE_FLAGS = {"catchall": "catchall", "disposable": "disposable", "business": "business_account",
                   "free": "free_account", "role": "role_account", "gibberish": "gibberish"}
Attribute = Literal["catchall", "disposable", "business", "free", "role", "gibberish"]


def _lead(data: dict) -> dict | None:
    """The fields we use of `data.lead`, or None when nothing was found."""
    lead = data.get("lead")
    if not isinstance(lead, dict):
        return None
    kind = str(lead.get("type") or "person").lower()

    def text(name: str) -> str | None:
        value = lead.get(name)
        return value.strip() if isinstance(value, str) and value.strip() else None

    return {"type": kind, "name": text("name"),
            # `contructed_title` (sic) is Clearout's normalised title; the real one comes first.
            "title": text("title") or text("contructed_title"),
            "linkedin_url": text("linkedin_url"), "company_name": text("company_name"),
            "company_domain": text("company_domain")}


def _lookup(client: ClearoutClient, path: str, params: dict) -> dict:
    resp, body = client._send("GET", path, "other", 30, params=params)
    client._raise_for(path, resp, body)
    data = body.get("data")
    lead = _lead(data if isinstance(data, dict) else {})
    return {"lead": lead, "credits": LOOKUP_CREDITS.get(lead["type"], 4) if lead else 0}


def reverse_lookup_email(client: ClearoutClient, email: str) -> dict:
    """{"lead": the person (or role) behind the address, or None; "credits": what it cost}."""
    return _lookup(client, "/reverse_lookup/email", {"email_address": email})


def reverse_lookup_linkedin(client: ClearoutClient, url: str) -> dict:
    """{"lead": the person behind a LinkedIn profile, or None; "credits": what it cost}."""
    return _lookup(client, "/reverse_lookup/linkedin", {"url": url})


def attribute_check(client: ClearoutClient, attribute: Attribute, email: str,
                    timeout_ms: int = ATTRIBUTE_TIMEOUT_MS) -> bool:
    """One yes/no fact about an address (is it disposable? a role? free
    webmail?). A 524 (the catch-all check outlasting `timeout_ms`) is a
    ProviderUnavailable: retried later."""
    if not 0 < timeout_ms <= ATTRIBUTE_TIMEOUT_MAX_MS:
        raise ValueError(f"timeout_ms must be in 1..{ATTRIBUTE_TIMEOUT_MAX_MS}")
    path = f"/email/verify/{attribute}"
    resp, body = client._send("POST", path, "verify", timeout_ms / 1000 + READ_MARGIN_S,
                              json={"email": email, "timeout": timeout_ms})
    client._raise_for(path, resp, body)
    data = body.get("data")
    return isinstance(data, dict) and str(data.get(ATTRIBUTE_FLAGS[attribute], "")).strip().lower() == "yes"
