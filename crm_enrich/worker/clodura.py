"""Clodura API client (contracts/clodura.md). Every call goes through the
shared rate limiter; answers are classified by status as §4.3 says."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

import requests

from crm_enrich.worker.ratelimit import SharedRateLimiter

TIMEOUT = (5, 30)


class ProviderError(Exception):
    """Base: `retryable` errors are retried with backoff by the task."""

    retryable = False

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class ProviderUnavailable(ProviderError):
    """429, 5xx, timeouts, connection errors."""

    retryable = True


class DailyQuotaExceeded(ProviderError):
    """409: no more requests until the provider's day rolls over."""


class CreditsExhausted(ProviderError):
    """402: credit-spending work pauses until credits return."""


class ProviderRejected(ProviderError):
    """400/401/403/404/422: retrying the same request cannot help."""


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
                 on_answer: Callable[[str, int], None] | None = None):
        self.base_url = base_url.rstrip("/")
        self.limiter = limiter
        self.on_answer = on_answer
        self.session = session or requests.Session()
        self.session.headers.update({"X-API-KEY": api_key, "Accept": "application/json"})

    def _post(self, path: str, body: dict) -> requests.Response:
        if self.limiter:
            self.limiter.acquire()
        try:
            resp = self.session.post(f"{self.base_url}{path}", json=body, timeout=TIMEOUT)
        except requests.RequestException as exc:
            raise ProviderUnavailable(f"{path}: {type(exc).__name__}") from None
        status = resp.status_code
        if self.on_answer:
            self.on_answer(path, status)
        if status in (200, 202):
            return resp
        message = f"{path}: {status} {_message(resp)}"
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
            # Contract §8.6: 2 for a person, 1 for an organisation only, 0 for nothing.
            credits = 0 if not data else (2 if data.get("personId") else 1)
        return {"person": data or None, "credits": credits}

    def credits(self) -> float:
        """Credits left: the single pool, or contact views left on Prospect plans."""
        if self.limiter:
            self.limiter.acquire()
        try:
            resp = self.session.get(f"{self.base_url}/api/v1/credits", timeout=TIMEOUT)
        except requests.RequestException as exc:
            raise ProviderUnavailable(f"/api/v1/credits: {type(exc).__name__}") from None
        if resp.status_code != 200:
            raise ProviderUnavailable(f"/api/v1/credits: {resp.status_code}", resp.status_code)
        body = resp.json()
        if "remainingCredits" in body:
            return float(body["remainingCredits"])
        return float(body.get("maxContacts", 0)) - float(body.get("contactsView", 0))

    def verify_email(self, email: str, deep: bool = False, webhook_url: str | None = None) -> VerifyAnswer:
        body = {"email": email, "deepVerification": deep}
        if webhook_url:
            body["webhookUrl"] = webhook_url
        resp = self._post("/api/v1/verify/email", body)
        return VerifyAnswer(resp.status_code == 202, resp.json())


def backoff_s(attempt: int, base: float = 2.0, cap: float = 120.0) -> float:
    """Exponential backoff with full jitter."""
    return random.uniform(0, min(cap, base * 2 ** attempt))
