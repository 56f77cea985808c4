"""Clodura API client (docs/clodura.md). Every call goes through the
shared rate limiter; answers are classified by status as
docs/clodura.md#errors says."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import requests

from crm_enrich.providers.breaker import CircuitBreaker, send_through
from crm_enrich.providers.errors import (
    CreditsExhausted,
    DailyQuotaExceeded,
    ProviderRejected,
    ProviderUnavailable,
)
from crm_enrich.providers.rate_limit import SharedRateLimiter

TIMEOUT = (5, 30)


def _retry_after(resp: requests.Response) -> float | None:
    try:
        return float(resp.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


def _message(resp: requests.Response) -> str:
    try:
        body = resp.json()
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])[:200]
    except ValueError:
        pass
    return resp.reason or f"HTTP {resp.status_code}"


@dataclass
class VerifyAnswer:
    accepted_for_later: bool      # 202: the verdict comes by callback
    body: dict


class CloduraClient:
    def __init__(self, base_url: str, api_key: str, limiter: SharedRateLimiter | None = None,
                 session: requests.Session | None = None,
                 on_answer: Callable[[str, int], None] | None = None,
                 breaker: CircuitBreaker | None = None):
        self.base_url = base_url.rstrip("/")
        self.limiter = limiter
        self.breaker = breaker
        self.on_answer = on_answer
        self.session = session or requests.Session()
        self.session.headers.update({"X-API-KEY": api_key, "Accept": "application/json"})

    def _post(self, path: str, body: dict) -> requests.Response:
        return self._request("POST", path, json=body)

    def _get(self, path: str, endpoint: str) -> dict:
        return self._request("GET", path, endpoint=endpoint).json()

    def _request(self, method: str, path: str, endpoint: str | None = None, **kwargs) -> requests.Response:
        endpoint = endpoint or path

        def send() -> requests.Response:
            if self.limiter:
                self.limiter.acquire()
            return self.session.request(method, f"{self.base_url}{path}", timeout=TIMEOUT, **kwargs)

        resp = send_through(self.breaker, endpoint, send)
        status = resp.status_code
        if self.on_answer:
            self.on_answer(endpoint, status)
        if status in (200, 202):
            return resp
        message = f"{endpoint}: {status} {_message(resp)}"
        if status == 429 or status >= 500:
            raise ProviderUnavailable(message, status, _retry_after(resp))
        if status == 409:
            raise DailyQuotaExceeded(message, status, _retry_after(resp))
        if status == 402:
            raise CreditsExhausted(message, status)
        raise ProviderRejected(message, status)

    def enrich_contact(self, identifiers: dict) -> dict:
        """{"person": the best match or None, "credits": what it cost}."""
        body = self._post("/api/v1/cleanup/enrich", identifiers).json()
        data = body.get("data") if isinstance(body, dict) else None
        if isinstance(data, list):
            data = data[0] if data else None
        credits = body.get("creditsUsed") if isinstance(body, dict) else None
        if not isinstance(credits, (int, float)):
            # docs/clodura.md#person-enrich: 2 for a person, 1 for an organisation only, 0 for nothing.
            credits = 0 if not data else (2 if data.get("personId") else 1)
        return {"person": data or None, "credits": credits}

    def search_organisations(self, filters: dict) -> dict:
        """{"organisations": the first page of matches, "credits": what it cost}
        (docs/clodura.md#organisation-search; the cost is not documented, so
        only a stated one counts)."""
        body = self._post("/api/v1/organisation/search", {**filters, "perPage": 25}).json()
        found = body.get("organisations", body.get("organisation")) if isinstance(body, dict) else None
        credits = body.get("creditsUsed") if isinstance(body, dict) else None
        return {"organisations": [o for o in found or [] if isinstance(o, dict)],
                "credits": credits if isinstance(credits, (int, float)) else 0}

    def enrich_organisation(self, request: dict) -> dict:
        """{"organisation": the company or None (unknown id), "credits": what
        it cost}. `request`: organisationId plus the include* flags
        (docs/clodura.md#organisation-enrich)."""
        try:
            body = self._post("/api/v1/organisation/enrich", request).json()
        except ProviderRejected as exc:
            if exc.status == 404:  # unknown organisation: nothing to charge or retry
                return {"organisation": None, "credits": 0}
            raise
        credits = body.get("creditsUsed")
        if not isinstance(credits, (int, float)):
            # docs/clodura.md#organisation-enrich: 1 for the base firmographics, +1 per component.
            credits = 1 + sum(1 for key, value in request.items() if key.startswith("include") and value)
        return {"organisation": body, "credits": credits}

    # -- Account signals (docs/clodura.md#job-posts, docs/clodura.md#company-news) --

    def job_posts(self, request: dict) -> dict:
        """{"body": the first page of job posts, or None (unknown
        organisation), "credits": what it cost}."""
        return self._signal("/api/v1/organisation/jobpost", request, "jobPosts")

    def company_news(self, request: dict) -> dict:
        """{"body": the first page of articles, or None, "credits"}: 2 a request with articles."""
        return self._signal("/api/v1/organisation/news", request, "news")

    def _signal(self, path: str, request: dict, items: str) -> dict:
        try:
            body = self._post(path, request).json()
        except ProviderRejected as exc:
            if exc.status == 404:  # unknown organisation: nothing to charge or retry
                return {"body": None, "credits": 0}
            raise
        body = body if isinstance(body, dict) else {}
        credits = body.get("creditsUsed")
        if not isinstance(credits, (int, float)):
            # 2 a request that returns anything; nothing found costs nothing (docs/clodura.md#credits).
            credits = 2 if body.get(items) else 0
        return {"body": body, "credits": credits}

    def credits(self) -> float:
        """Credits left: the single pool, or contact views left on Prospect plans."""
        body = self._get("/api/v1/credits", "/api/v1/credits")
        if "remainingCredits" in body:
            return float(body["remainingCredits"])
        return float(body.get("maxContacts", 0)) - float(body.get("contactsView", 0))

    def verify_email(self, email: str, deep: bool = False, webhook_url: str | None = None) -> VerifyAnswer:
        body = {"email": email, "deepVerification": deep}
        if webhook_url:
            body["webhookUrl"] = webhook_url
        resp = self._post("/api/v1/verify/email", body)
        return VerifyAnswer(resp.status_code == 202, resp.json())

    def reveal_email(self, identifiers: dict, webhook_url: str) -> dict:
        """Queue a reveal (docs/clodura.md#reveal-email); the result comes to `webhook_url`.
        Answers the immediate body, which holds the job's id."""
        return self._post("/api/v1/search/people/email/match",
                          {**identifiers, "webhookUrl": webhook_url}).json()

    def reveal_phone(self, identifiers: dict, webhook_url: str, via_partners: bool) -> dict:
        return self._post("/api/v1/search/people/phone/match",
                          {**identifiers, "webhookUrl": webhook_url,
                           "revealPhoneNumberViaPartners": via_partners}).json()

    # INFERRED polling endpoints (docs/clodura.md#polling), free; only a
    # fallback for a callback that did not come.
    def verification_status(self, doc_id: str) -> dict:
        return self._get(f"/api/v1/verify/email/{quote(doc_id, safe='')}", "/api/v1/verify/email/{docId}")

    def reveal_status(self, tracking_id: str) -> dict:
        return self._get(f"/api/v1/search/people/track/{quote(tracking_id, safe='')}",
                         "/api/v1/search/people/track/{id}")


