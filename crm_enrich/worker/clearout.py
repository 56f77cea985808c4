"""Clearout API v2 client (contracts/clearout.md). Every answer's
x-ratelimit-* headers feed a limiter shared through Redis, so no worker
sends a request the window has no room for; a 429 (code 1030) blocks the
family until the window resets. A `status: "failed"` body is an error
whatever the HTTP status."""
from __future__ import annotations

import time

import redis
import requests

from crm_enrich.worker.clodura import (
    CreditsExhausted, DailyQuotaExceeded, ProviderRejected, ProviderUnavailable,
)
from crm_enrich.worker.ratelimit import RateLimited

TIMEOUT = (5, 190)  # the instant verify may take up to its own 180 s timeout


class HeaderFedLimiter:
    """Clearout tells us its window in every answer; we remember, per
    endpoint family, until when it is exhausted."""

    def __init__(self, client: redis.Redis, name: str):
        self.r = client
        self.prefix = f"ratelimit:clearout:{name}"

    def check(self, family: str) -> None:
        until = float(self.r.get(f"{self.prefix}:{family}:blocked_until") or 0)
        if until > time.time():
            raise RateLimited(until - time.time())

    def observe(self, family: str, headers, limited: bool = False) -> None:
        try:
            remaining = int(headers.get("x-ratelimit-remaining", 1))
            reset_s = float(headers.get("x-ratelimit-reset", 60 if limited else 0))
        except ValueError:
            remaining, reset_s = (0, 60.0) if limited else (1, 0.0)
        if limited or remaining <= 0:
            until = time.time() + max(reset_s, 1.0)
            self.r.set(f"{self.prefix}:{family}:blocked_until", until, px=int(max(reset_s, 1.0) * 1000) + 1000)


class ClearoutClient:
    def __init__(self, base_url: str, token: str, limiter: HeaderFedLimiter | None = None,
                 session: requests.Session | None = None):
        self.base_url = base_url.rstrip("/")
        self.limiter = limiter
        self.session = session or requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/json"})

    def _call(self, method: str, path: str, family: str, **kwargs) -> dict:
        if self.limiter:
            self.limiter.check(family)
        try:
            resp = self.session.request(method, f"{self.base_url}{path}", timeout=TIMEOUT, **kwargs)
        except requests.RequestException as exc:
            raise ProviderUnavailable(f"clearout {path}: {type(exc).__name__}") from None
        if self.limiter:
            self.limiter.observe(family, resp.headers, limited=resp.status_code == 429)
        try:
            body = resp.json()
        except ValueError:
            body = {}
        error = body.get("error") or {} if isinstance(body, dict) else {}
        code = error.get("code")
        message = f"clearout {path}: {resp.status_code} {code or ''} {error.get('message', '')}".strip()
        if resp.status_code == 524:  # the verdict took longer than our timeout
            raise ProviderUnavailable(message, 524)
        if resp.status_code == 429 or code == 1030:
            raise ProviderUnavailable(message, 429, float(resp.headers.get("x-ratelimit-reset", 60)))
        if resp.status_code >= 500:
            raise ProviderUnavailable(message, resp.status_code)
        if resp.status_code == 402 or code in (1002, 1099):
            raise CreditsExhausted(message, resp.status_code)
        if code == 1017:
            raise DailyQuotaExceeded(message, resp.status_code)
        if resp.status_code != 200 or body.get("status") != "success":
            raise ProviderRejected(message, resp.status_code)
        return body.get("data") or {}

    def verify_email(self, email: str, timeout_ms: int = 30_000) -> dict:
        return self._call("POST", "/email_verify/instant", "verify",
                          json={"email": email, "timeout": timeout_ms})

    def credits(self) -> float:
        return float(self._call("GET", "/email_verify/getcredits", "verify").get("available_credits", 0))
