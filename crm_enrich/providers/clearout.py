"""Clearout API v2 client (docs/clearout.md).

Every answer's x-ratelimit-* headers feed a limiter shared through Redis, so
no worker sends a request the window has no room for; a 429 (code 1030)
blocks the endpoint family until the window resets. A `status: "failed"`
body is an error whatever the HTTP status, except where the contract makes
it an answer (finder "not found", code 1027).

Errors are the Clodura client's classes, so callers handle both providers
alike: ProviderUnavailable (retryable: 429, 5xx, 524, network),
ProviderRejected (anything else), and its subclass ClearoutRefused for
credits (402) or the daily verify limit (1017/1032). RateLimited (from the shared limiter) means "not sent: the
window is used up, try again in `wait_s`".
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import redis
import requests

from crm_enrich import keys
from crm_enrich.providers.breaker import CircuitBreaker, send_through
from crm_enrich.providers.errors import ProviderRejected, ProviderUnavailable
from crm_enrich.providers.rate_limit import RateLimited

CONNECT_TIMEOUT_S = 5
# Our read timeout is the request's own `timeout` plus this margin, so the
# provider's 524 reaches us before our socket gives up.
READ_MARGIN_S = 10
VERIFY_TIMEOUT_MAX_MS = 180_000   # docs/clearout.md#instant-verify
FINDER_TIMEOUT_MAX_MS = 180_000   # docs/clearout.md#instant-finder (INFERRED maximum)
# Shorter than Clearout's 130 s default: a worker should not hang on one
# address; a 524 is retried later.
VERIFY_TIMEOUT_MS = 30_000
FINDER_TIMEOUT_MS = 30_000

E_DAILY_LIMIT = (1017, 1032)
E_NO_CREDITS = (1002, 1028, 1031, 1099)
E_RATE_LIMIT = 1030
E_NOT_FOUND = 1027

Verdict = Literal["valid", "invalid", "risky", "catch_all", "unknown"]

# Sub-statuses whose primary status is "unknown"
# (docs/clearout.md#sub-statuses); used only when an answer lacks a status we
# recognise.
_UNKNOWN_SUB_STATUSES = frozenset({402, 405, 407, 412, 414, 416, 417, 418, 420})


def clearout_verdict(status: str | None, sub_status: int | None = None,
                     safe_to_send: str | None = None) -> Verdict:
    """Our verdict from Clearout's status, sub-status and safe_to_send.

    - `invalid`, `catch_all`, `unknown` map to themselves.
    - `valid` is ours `valid` when Clearout calls it safe to send; a mailbox
      that exists but is not safe (`safe_to_send` "risky" or "no": role,
      gibberish, disposable addresses) is `risky`.
    - Without a recognised status, the sub-status decides (docs/clearout.md#sub-statuses):
      200/601/603 valid, 411 catch_all, the retry-later codes unknown, every
      other code invalid; no sub-status either: unknown.
    """
    status = (status or "").strip().lower()
    if status not in ("valid", "invalid", "catch_all", "unknown"):
        if sub_status in (200, 601, 603):
            status = "valid"
        elif sub_status == 411:
            status = "catch_all"
        elif sub_status is None or sub_status in _UNKNOWN_SUB_STATUSES:
            status = "unknown"
        else:
            status = "invalid"
    if status == "valid" and (safe_to_send or "").strip().lower() in ("risky", "no"):
        return "risky"
    return status  # type: ignore[return-value]


@dataclass(frozen=True)
class ClearoutVerdict:
    verdict: Verdict             # ours, see clearout_verdict()
    provider_status: str         # Clearout's status: valid / invalid / catch_all / unknown
    detail: str                  # e.g. "406 Mailbox not Found; safe to send: no"
    sub_status: int | None
    safe_to_send: str | None     # yes / no / risky / unknown
    verified_at: str | None      # ISO-8601, as Clearout gave it
    email_type: str | None = None  # business / free / role / disposable, from the answer's flags


@dataclass(frozen=True)
class FinderResult:
    status: Literal["found", "not_found", "queued"]
    email: str | None = None
    queue_id: str | None = None   # set when queued: pass it to finder_status()
    confidence: int | None = None  # 0-100
    role: bool = False            # a role address (info@, sales@...)
    business: bool | None = None  # a business address (None: Clearout did not say)


@dataclass(frozen=True)
class ClearoutCredits:
    available: int
    daily_verify_left: int | None   # None: the plan has no daily verify limit
    low_balance_threshold: int | None


class ClearoutRefused(ProviderRejected):
    """Clearout's credits or daily verify limit are used up. Unlike
    Clodura's (which pause all credit-spending work until the sweeper sees
    credits again), this fails the job visibly, to be replayed once the
    Clearout account is topped up."""


class HeaderFedLimiter:
    """Clearout tells us its window in every answer; we remember, per
    endpoint family, until when it is exhausted."""

    def __init__(self, client: redis.Redis, name: str):
        self.r = client
        self.name = name

    def check(self, family: str) -> None:
        until = float(self.r.get(keys.clearout_blocked_until(self.name, family)) or 0)
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
            self.r.set(keys.clearout_blocked_until(self.name, family), until, px=int(max(reset_s, 1.0) * 1000) + 1000)


def _outage_status(status: int) -> bool:
    # 524 is a verdict slower than its timeout, not an outage.
    return status >= 500 and status != 524


def json_object(resp: requests.Response) -> dict:
    """The answer's JSON object; {} for anything else."""
    try:
        body = resp.json()
    except ValueError:
        body = {}
    return body if isinstance(body, dict) else {}


def _check_timeout(timeout_ms: int, maximum: int) -> None:
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or not 0 < timeout_ms <= maximum:
        raise ValueError(f"timeout_ms must be an integer in 1..{maximum}")


class ClearoutClient:
    def __init__(self, base_url: str, token: str, limiter: HeaderFedLimiter | None = None,
                 session: requests.Session | None = None,
                 on_answer: Callable[[str, int], None] | None = None,
                 breaker: CircuitBreaker | None = None):
        self.base_url = base_url.rstrip("/")
        self.limiter = limiter
        self.breaker = breaker
        self.on_answer = on_answer
        self.session = session or requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {token}", "Accept": "application/json"})

    def _send(self, method: str, path: str, family: str, read_timeout_s: float,
              **kwargs) -> tuple[requests.Response, dict]:
        """One request: the breaker and the limiter are asked first and fed
        after; answers (status, body) for the caller to classify."""
        def send() -> requests.Response:
            if self.limiter:
                self.limiter.check(family)
            return self.session.request(method, f"{self.base_url}{path}",
                                        timeout=(CONNECT_TIMEOUT_S, read_timeout_s), **kwargs)

        resp = send_through(self.breaker, f"clearout {path}", send, is_outage=_outage_status)
        if self.limiter:
            self.limiter.observe(family, resp.headers, limited=resp.status_code == 429)
        if self.on_answer:
            self.on_answer(path, resp.status_code)
        return resp, json_object(resp)

    @staticmethod
    def _raise_for(path: str, resp: requests.Response, body: dict) -> None:
        """Raise the error this answer is, or return for a success envelope."""
        error = body["error"] if isinstance(body.get("error"), dict) else {}
        code = error.get("code")
        status = resp.status_code
        message = f"clearout {path}: {status} {code or ''} {str(error.get('message', ''))[:200]}".strip()
        if status == 429 or code == E_RATE_LIMIT:
            raise ProviderUnavailable(message, 429, float(resp.headers.get("x-ratelimit-reset", 60)))
        if status >= 500:  # 524 included: the verdict took longer than the request's timeout
            raise ProviderUnavailable(message, status)
        if status == 402 or code in E_NO_CREDITS:
            raise ClearoutRefused(f"{message} (credits exhausted)", status)
        if code in E_DAILY_LIMIT:
            raise ClearoutRefused(f"{message} (daily verify limit reached)", status)
        if status != 200 or body.get("status") != "success":
            raise ProviderRejected(message, status)

    # -- instant verify (docs/clearout.md#instant-verify) ------------------------

    def verify_email(self, email: str, timeout_ms: int = VERIFY_TIMEOUT_MS) -> ClearoutVerdict:
        """Instant verification. A 524 (no verdict within `timeout_ms`) is a
        ProviderUnavailable: retry later, perhaps with a larger timeout."""
        _check_timeout(timeout_ms, VERIFY_TIMEOUT_MAX_MS)
        path = "/email_verify/instant"
        resp, body = self._send("POST", path, "verify", timeout_ms / 1000 + READ_MARGIN_S,
                                json={"email": email, "timeout": timeout_ms})
        self._raise_for(path, resp, body)
        return parse_verdict(body.get("data") or {})

    # -- credits (docs/clearout.md#balance) ----------------------------------------

    def credits(self) -> ClearoutCredits:
        path = "/email_verify/getcredits"
        resp, body = self._send("GET", path, "verify", 30)
        self._raise_for(path, resp, body)
        data = body.get("data") or {}
        detail = data.get("credits") or {}
        return ClearoutCredits(
            available=int(data.get("available_credits", detail.get("available", 0)) or 0),
            daily_verify_left=_int_or_none(detail.get("available_daily_verify_limit")),
            low_balance_threshold=_int_or_none(data.get("low_credit_balance_min_threshold")),
        )

    # -- email finder (docs/clearout.md#instant-finder) --------------------------------

    def find_email(self, name: str, domain: str, timeout_ms: int = FINDER_TIMEOUT_MS,
                   queue: bool = True) -> FinderResult:
        """Instant finder. When the search outlasts `timeout_ms` and `queue`
        is true, Clearout keeps searching: the answer is status "queued"
        with a queue id for finder_status(). Without a queue id, a 524 is a
        ProviderUnavailable."""
        _check_timeout(timeout_ms, FINDER_TIMEOUT_MAX_MS)
        path = "/email_finder/instant"
        resp, body = self._send("POST", path, "finder", timeout_ms / 1000 + READ_MARGIN_S,
                                json={"name": name, "domain": domain, "timeout": timeout_ms,
                                      "queue": queue})
        if resp.status_code == 524:
            info = (body.get("error") or {}).get("additional_info") or {}
            if info.get("queue_id"):
                return FinderResult(status="queued", queue_id=str(info["queue_id"]))
        return self._finder_answer(path, resp, body)

    def finder_status(self, queue_id: str) -> FinderResult:
        """A queued search: still "queued", or its final found / not_found.
        An unknown queue id (code 1104) is a ProviderRejected."""
        path = "/email_finder/instant/queue_status"
        resp, body = self._send("GET", path, "finder", 30, params={"qid": queue_id})
        data = body["data"] if isinstance(body.get("data"), dict) else {}
        # The pending literal is not documented (docs/clearout.md#finder-queue):
        # anything without results that does not say "completed" is still running.
        if body.get("status") == "success" and "emails" not in data and data.get("query_status") != "completed":
            return FinderResult(status="queued", queue_id=queue_id)
        return self._finder_answer(path, resp, body)

    def _finder_answer(self, path: str, resp: requests.Response, body: dict) -> FinderResult:
        error = body["error"] if isinstance(body.get("error"), dict) else {}
        if resp.status_code == 200 and error.get("code") == E_NOT_FOUND:
            return FinderResult(status="not_found")
        self._raise_for(path, resp, body)
        data = body.get("data") or {}
        emails = [e for e in data.get("emails") or [] if isinstance(e, dict) and e.get("email_address")]
        if not emails:
            return FinderResult(status="not_found")
        best = emails[0]
        return FinderResult(status="found", email=best["email_address"],
                            confidence=_int_or_none(data.get("confidence_score")),
                            role=str(best.get("role", "")).lower() == "yes",
                            business=_yes_no(best.get("business")))


def parse_verdict(data: dict) -> ClearoutVerdict:
    """A verify answer's `data` → ClearoutVerdict."""
    sub = data["sub_status"] if isinstance(data.get("sub_status"), dict) else {}
    code = _int_or_none(sub.get("code"))
    status = str(data.get("status") or "unknown")
    safe = data.get("safe_to_send")
    detail = " ".join(str(p) for p in (code, sub.get("desc")) if p not in (None, ""))
    if safe:
        detail = f"{detail}; safe to send: {safe}" if detail else f"safe to send: {safe}"
    return ClearoutVerdict(
        verdict=clearout_verdict(status, code, safe),
        provider_status=status,
        detail=detail or status,
        sub_status=code,
        safe_to_send=safe,
        verified_at=data.get("verified_on"),
        email_type=email_type_of(data),
    )


def _yes_no(value) -> bool | None:
    text = str(value or "").strip().lower()
    return True if text == "yes" else False if text == "no" else None


def email_type_of(data: dict) -> str | None:
    """What kind of address a verify answer's flags say it is, the worst
    first: disposable, role, free (webmail), else business; None when the
    answer carries no flags."""
    flags = {name: _yes_no(data.get(name)) for name in ("disposable", "role", "free")}
    for name, flag in flags.items():
        if flag:
            return name
    return "business" if all(flag is False for flag in flags.values()) else None


def _int_or_none(value) -> int | None:
    try:
        return None if value is None or value == "" else int(value)
    except (TypeError, ValueError):
        return None
