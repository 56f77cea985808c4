"""Clearout's company autocomplete: a company name (or a website) to its
domain (docs/clearout.md#company-autocomplete).

The endpoint is public and free: it needs no token (we send ours when we
have one) and costs no credits, but it is rate-limited (429) and has a
daily limit, which Clearout reports as a `status: "failed"` body under
HTTP 200. A 429 or 5xx is retried like any passing error; a refusal for the
day answers no suggestion, so the record is enriched without a domain
rather than held for a nice-to-have.
"""
from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import requests

from crm_enrich.providers.breaker import CircuitBreaker, send_through
from crm_enrich.providers.clearout import HeaderFedLimiter, json_object
from crm_enrich.providers.errors import ProviderRejected, ProviderUnavailable

TIMEOUT = (5, 15)
PATH = "/public/companies/autocomplete"
FAMILY = "autocomplete"   # the limiter's window of its own


def autocomplete_url(clearout_base_url: str) -> str:
    """The public endpoint lives beside the API's `/v2`, not under it:
    https://api.clearout.io/v2 -> https://api.clearout.io/public/companies/autocomplete."""
    parts = urlsplit(clearout_base_url.rstrip("/"))
    path = parts.path.removesuffix("/v2")
    return urlunsplit((parts.scheme, parts.netloc, path + PATH, "", ""))


def best_suggestion(suggestions: list[dict], min_confidence: int) -> dict | None:
    """The most confident suggestion with a domain, only if it reaches
    `min_confidence`: a weak guess would put another company's firmographics
    and people on the record."""
    ranked = sorted((s for s in suggestions if s.get("domain")), key=lambda s: -int(s.get("confidence") or 0))
    if not ranked or int(ranked[0].get("confidence") or 0) < min_confidence:
        return None
    return ranked[0]


def parse_suggestions(data) -> list[dict]:
    """Clearout's `data` list as [{"name", "domain", "confidence"}], best first."""
    found = []
    for item in data if isinstance(data, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("domain"), str) or not item["domain"].strip():
            continue
        try:
            score = int(item.get("confidence_score") or 0)
        except (TypeError, ValueError):
            score = 0
        found.append({"name": str(item.get("name") or ""), "domain": item["domain"].strip().lower(),
                      "confidence": max(0, min(100, score))})
    return sorted(found, key=lambda s: -s["confidence"])


class CompanyAutocomplete:
    def __init__(self, url: str, token: str | None = None, limiter: HeaderFedLimiter | None = None,
                 session: requests.Session | None = None,
                 on_answer: Callable[[str, int], None] | None = None,
                 breaker: CircuitBreaker | None = None):
        self.url = url
        self.limiter = limiter
        self.breaker = breaker
        self.on_answer = on_answer
        self.session = session or requests.Session()
        self.session.headers.update({"Accept": "application/json"})
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def suggestions(self, query: str) -> dict:
        """{"suggestions": [...], "refused": None} or, when Clearout refuses
        for the day, {"suggestions": [], "refused": its message}."""
        def send() -> requests.Response:
            if self.limiter:
                self.limiter.check(FAMILY)
            return self.session.get(self.url, params={"query": query}, timeout=TIMEOUT)

        # Every 5xx counts against the breaker: the request sets no timeout,
        # so a 524 here is no slow verdict.
        resp = send_through(self.breaker, "clearout autocomplete", send)
        status = resp.status_code
        if self.limiter:
            self.limiter.observe(FAMILY, resp.headers, limited=status == 429)
        if self.on_answer:
            self.on_answer("public/companies/autocomplete", status)
        body = json_object(resp)
        error: dict = body["error"] if isinstance(body.get("error"), dict) else {}
        message = f"clearout autocomplete: {status} {error.get('code') or ''} {str(error.get('message', ''))[:200]}"
        if status == 429 or status >= 500:
            raise ProviderUnavailable(message.strip(), status,
                                      float(resp.headers.get("x-ratelimit-reset", 60)) if status == 429 else None)
        if status == 200 and body.get("status") == "failed":
            return {"suggestions": [], "refused": message.strip()}
        if status != 200 or body.get("status") != "success":
            raise ProviderRejected(message.strip(), status)
        return {"suggestions": parse_suggestions(body.get("data")), "refused": None}
