"""Clodura API simulator (docs/clodura.md).

Pipeline for every `/api/v1/...` request, in the order docs/clodura.md#errors
gives:

    X-API-KEY check (401) -> per-key rate limiter (429 second/minute, 409 day)
    -> plan permission (403) -> validation (400) -> credit check (402)
    -> work and charge.

Rejected requests (401/429/409) are not counted against the quotas and charge
nothing.  Requests that pass the limiter count toward the windows even when a
later stage refuses them (400/402/403).

Control API (no key, no rate limit, no charge; also see common.py for
/_sandbox/log and /_sandbox/faults):

    GET  /_sandbox/clodura/usage     per-key plan, balance, counters
    POST /_sandbox/clodura/credits   {"key": k, "remainingCredits": x}
    GET  /_sandbox/clodura/config    the effective limits
    POST /_sandbox/clodura/config    {"rate_limits": {key: [[count, seconds], ...] | null},
                                      "day_seconds": s, "api_keys": {key: plan},
                                      "webhook_delay_s": s, "webhook_retry_delays_s": [s, ...],
                                      "webhook_timeout_s": s, "webhook_verify": path|bool|null,
                                      "catch_all_202_on_standard": bool,
                                      "deep_catch_all_deliverable_share": x}
    POST /_sandbox/clodura/reset     credits, windows, usage, config, log and faults
                                     back to their starting state (also drops pending
                                     webhooks, jobs, the delivery log and webhook faults)

Asynchronous endpoints (docs/clodura.md#asynchronous-results,
docs/clodura.md#reveals, docs/clodura.md#polling,
docs/clodura.md#email-verification) hand their results to a webhook
dispatcher: a daemon thread, started on first use, that POSTs JSON to the
caller's `webhookUrl` after `webhook_delay_s`, retrying non-2xx answers and
errors after each of `webhook_retry_delays_s` (INFERRED defaults 5/30/120 s,
docs/clodura.md#asynchronous-results), with a `webhook_timeout_s` (10 s)
timeout.  Webhook control API:

    POST   /_sandbox/clodura/webhook-faults  {"mode": "lose"|"duplicate"|"late"|"forged_token",
                                              "times": n (default 1, -1 = until cleared),
                                              "late_s": s (mode late)}
    GET    /_sandbox/clodura/webhook-faults  the active rules
    DELETE /_sandbox/clodura/webhook-faults  clear them
    POST   /_sandbox/clodura/flush-webhooks  run every pending job/delivery now (synchronously);
                                             answers {"flushed": n, "pending": m}
    GET    /_sandbox/clodura/webhooks        {"deliveries": [{"id", "kind", "url", "attempt",
                                              "status_code", "error", "delivered", "t", "mode"}],
                                              "pending": n, "faults": [...]}
"""
from __future__ import annotations

import bisect
import copy
import hashlib
import heapq
import itertools
import json
import math
import random
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from flask import Flask, g, jsonify, request

from .clodura_signals import install_signal_routes
from .common import SandboxRecorder, install_recorder
from .dataset import (
    VERDICT_CATCH_ALL,
    VERDICT_DELIVERABLE,
    VERDICT_UNDELIVERABLE,
    Company,
    Dataset,
    Person,
    build_dataset,
)

# ---------------------------------------------------------------------------
# INFERRED names (docs/clodura.md#conventions): every response field name
# that the docs did not show lives here, so it can be renamed in one place
# once real payloads are observed.  Keys are our internal names, values the
# wire names.
# ---------------------------------------------------------------------------
INFERRED_FIELDS: dict[str, str] = {
    # error body (docs/clodura.md#errors)
    "error_status": "status",
    "error_message": "message",
    # Enrich Contacts envelope (docs/clodura.md#person-enrich)
    "enrich_data": "data",
    "credits_used": "creditsUsed",
    # Enrich Contacts person (docs/clodura.md#person-enrich)
    "person_id": "personId",
    "first_name": "firstName",
    "last_name": "lastName",
    "linkedin_url": "linkedinUrl",
    "title": "personTitle",
    "functional": "functional",
    "seniority": "seniority",
    "person_city": "personCity",
    "person_state": "personState",
    "person_country": "personCountry",
    "organisation": "organisation",
    # nested organisation (docs/clodura.md#person-enrich, docs/clodura.md#organisation-search)
    "organisation_id": "organisationId",
    "organisation_name": "organisationName",
    "domain": "domain",
    "org_linkedin_url": "orgLinkedinUrl",
    "industry": "industry",
    "employee_size": "organisationEmployeeSize",
    "employee_count": "employeeCount",
    "revenue": "revenue",
    "founded_year": "foundedYear",
    "org_city": "organisationCity",
    "org_state": "organisationState",
    "org_country": "organisationCountry",
    # Verify Email (docs/clodura.md#email-verification) — meanings documented, names INFERRED
    "verify_email": "email",
    "verify_deep": "deepVerification",
    "verify_doc_id": "docId",
    "verify_status": "status",
    "verify_result": "result",
    "verify_at": "verifiedAt",
    # Reveal Email / Reveal Phone (docs/clodura.md#job-ids,
    # docs/clodura.md#webhook-payloads, docs/clodura.md#reveals)
    "tracking_id": "trackingId",
    "job_status": "status",
    "reveal_type": "type",
    "email": "email",
    "email_status": "emailStatus",
    "providers": "providers",
    "provider": "provider",
    "provider_result": "result",
    "phone_numbers": "phoneNumbers",
    "phone_number": "number",
    "phone_type": "type",
    # Enrich Company (docs/clodura.md#organisation-enrich)
    "address": "address",
    "boardline_numbers": "boardlineNumbers",
    "financials": "financials",
    "total_funding": "totalFunding",
    "last_funding_type": "lastFundingType",
    "technographics": "technographics",
    "acquisitions": "acquisitions",
    "funding": "funding",
}
F = INFERRED_FIELDS

# Documented enum values (docs/clodura.md#email-verification).
VERIFY_STATUS_DONE = "Completed"
VERIFY_STATUS_PENDING = "In-progress"
VERIFY_RESULT_PENDING = "Pending"

# Documented request field names (docs/clodura.md#person-enrich, docs/clodura.md#email-verification).
ENRICH_IDENTIFIERS = ("linkedinUrl", "email", "firstName", "lastName", "organisationName", "orgLinkedinUrl")

# Credit costs (docs/clodura.md#credits).
COST_ENRICH_FULL = 2
COST_ENRICH_ORG_ONLY = 1
COST_VERIFY_STANDARD = 0.04
COST_VERIFY_DEEP = 0.1

# Plans (docs/clodura.md#plans, docs/clodura.md#rate-limits).  Plan names compare case-insensitively.
DAY = None  # marker in PLAN_WINDOWS: "the configured day length"
_FAST = [(10, 1.0), (100, 60.0), (2000, DAY)]
_SLOW_600 = [(1, 1.0), (10, 60.0), (600, DAY)]
_SLOW_300 = [(1, 1.0), (10, 60.0), (300, DAY)]
PLAN_WINDOWS: dict[str, list[tuple[int, float | None]]] = {
    "max": _FAST,
    "payg": _FAST,
    "professional": _FAST,
    "enterprise": _FAST,
    "prospect pro": _FAST,
    "prospect": _FAST,
    "starter": _SLOW_600,
    "basic": _SLOW_600,
    "lifetime": _SLOW_300,
    "free forever": _SLOW_300,
    "default": _SLOW_300,
}
# Prospect plans keep counters instead of one pool: plan -> maxContacts.
PROSPECT_MAX_CONTACTS = {"prospect": 1000, "prospect pro": 2000}
PROSPECT_MAX_DIRECT_DIALS = 200  # INFERRED (docs/clodura.md#plans)
VERIFY_PLANS = {"free forever", "max", "payg"}  # INFERRED: others -> 403 (docs/clodura.md#email-verification)

# Reveal endpoints (docs/clodura.md#credits, docs/clodura.md#webhook-payloads).
# The Multi-Provider waterfalls are scripted: the person's hash picks where the
# waterfall stops, and the cost follows.
EMAIL_PROVIDERS = ["clodura", "prospeo", "hunter", "rocketreach", "findymail", "leadmagic"]  # cost 1..6
PHONE_PROVIDER_COST = {"clodura": 10, "signalhire": 12, "enrichlayer": 14, "wiza": 16,
                       "leadmagic": 18, "rocketreach": 20, "findymail": 20}
PHONE_PARTNERS = [p for p in PHONE_PROVIDER_COST if p != "clodura"]
CLODURA_HOLDS_PHONE_SHARE = 0.6  # share of known people whose mobile Clodura's own DB holds
COST_REVEAL_STANDARD = 2          # Prospect plans: 1 unlock/phone + 1 export
COST_ORG_ENRICH_BASE = 1
ORG_COMPONENTS = ("includeTechnographics", "includeAcquisitions", "includeFunding")
JOB_QUEUED = "queued"
JOB_COMPLETED = "completed"
JOB_NOT_FOUND = "not_found"
JOB_FAILED = "failed"
WEBHOOK_FAULT_MODES = ("lose", "duplicate", "late", "forged_token")

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass
class CloduraSimConfig:
    api_keys: dict[str, str] = field(default_factory=lambda: {"sandbox-clodura-key": "Max"})
    # Per-key override of the plan's windows, as (count, seconds) pairs.  A
    # window at least `day_seconds` long is the daily quota (409); shorter
    # windows are the burst limits (429).  An override replaces all windows.
    rate_limits: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    day_seconds: float = 86400.0
    starting_credits: float = 10000.0
    # Webhooks (docs/clodura.md#asynchronous-results; INFERRED schedule)
    webhook_delay_s: float = 0.5
    webhook_retry_delays_s: list[float] = field(default_factory=lambda: [5.0, 30.0, 120.0])
    webhook_timeout_s: float = 10.0
    # `verify=` for webhook POSTs: None = requests' default (REQUESTS_CA_BUNDLE),
    # or a CA bundle path, or False.
    webhook_verify: bool | str | None = None
    # docs/clodura.md#email-verification: standard (non-deep) checks on
    # catch-all domains are queued (202) too.  Only when the caller gave a
    # webhookUrl: without one a standard check answers 200 synchronously (a
    # caller that gave no webhook could otherwise only learn the verdict
    # through the INFERRED polling endpoint).
    catch_all_202_on_standard: bool = True
    # Share of catch-all addresses that deep verification resolves to Deliverable.
    deep_catch_all_deliverable_share: float = 0.3


def _plan_key(plan: str) -> str:
    return plan.strip().lower()


def is_prospect(plan: str) -> bool:
    return _plan_key(plan) in PROSPECT_MAX_CONTACTS


@dataclass
class _Account:
    plan: str
    remaining: float = 0.0        # single-pool plans
    contacts_view: int = 0        # Prospect plans
    max_contacts: int = 0
    direct_dials: int = 0
    max_direct_dials: int = 0
    spent: float = 0.0
    counters: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)  # per endpoint, admitted requests

    def can_cover(self, cost: float) -> bool:
        if is_prospect(self.plan):
            return self.contacts_view + cost <= self.max_contacts
        return self.remaining + 1e-9 >= cost

    def charge(self, cost: float) -> None:
        if is_prospect(self.plan):
            self.contacts_view += int(math.ceil(cost))
        else:
            self.remaining = round(self.remaining - cost, 6)
        self.spent = round(self.spent + cost, 6)

    def remaining_credits(self) -> float:
        if is_prospect(self.plan):
            return float(self.max_contacts - self.contacts_view)
        return round(self.remaining, 6)


@dataclass
class Admission:
    ok: bool
    status: int = 200
    retry_after: int = 0
    message: str = ""


def subject(identifiers: dict) -> str:
    """Who a request is about, as a short stable digest for the request log:
    tests count the calls made for one person (repeats mean paying twice)
    without the log holding an email address."""
    return hashlib.sha256(json.dumps(identifiers, sort_keys=True).encode()).hexdigest()[:16]


def _h(*parts: object) -> int:
    """A stable hash (same value in every process, unlike hash())."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


class _Job:
    """One asynchronous piece of work (a reveal or a queued verification).

    `pending` is what the polling/tracking endpoints show until the result
    exists; `produce` builds the final payload (and charges) exactly once."""

    def __init__(self, job_id: str, kind: str, key: str, pending: dict,
                 produce: Callable[[], dict] | None = None, payload: dict | None = None):
        self.id = job_id
        self.kind = kind
        self.key = key
        self.pending = pending
        self._produce = produce
        self.payload = payload
        self._lock = threading.Lock()

    @property
    def done(self) -> bool:
        return self.payload is not None

    def result(self) -> dict:
        with self._lock:
            if self.payload is None:
                self.payload = self._produce() if self._produce else dict(self.pending)
            return self.payload

    def current(self) -> dict:
        return self.payload if self.payload is not None else self.pending


@dataclass(order=True)
class _Delivery:
    due: float
    seq: int
    job: _Job = field(compare=False)
    url: str | None = field(compare=False)  # None: produce only, nothing to POST
    mode: str = field(compare=False, default="normal")
    attempt: int = field(compare=False, default=1)
    generation: int = field(compare=False, default=0)


@dataclass
class _WebhookFault:
    mode: str
    times: int = 1
    late_s: float = 0.0

    def as_dict(self) -> dict:
        return {"mode": self.mode, "times": self.times, "late_s": self.late_s}


def forge_url(url: str) -> str:
    """The same URL with its last path segment replaced by a random string."""
    parts = urlsplit(url)
    head = parts.path.rstrip("/").rpartition("/")[0]
    path = f"{head}/{secrets.token_urlsafe(12)}"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


class WebhookDispatcher:
    """Delivers job results to webhook URLs from a background daemon thread
    (started lazily).  Each due delivery runs on its own short-lived daemon
    thread so one slow receiver does not hold up the others."""

    def __init__(self, state: CloduraSimState):
        self.state = state
        self.cond = threading.Condition()
        self.heap: list[_Delivery] = []
        self.log: list[dict] = []
        self.faults: list[_WebhookFault] = []
        self.generation = 0
        self.in_flight = 0
        self._seq = itertools.count(1)
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------
    def reset(self) -> None:
        with self.cond:
            self.heap.clear()
            self.log.clear()
            self.faults.clear()
            self.generation += 1
            self.cond.notify_all()

    def _ensure_thread(self) -> None:
        # call with self.cond held
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="clodura-webhooks", daemon=True)
            self._thread.start()

    # -- faults ----------------------------------------------------------------
    def add_fault(self, fault: _WebhookFault) -> None:
        with self.cond:
            self.faults.append(fault)

    def clear_faults(self) -> None:
        with self.cond:
            self.faults.clear()

    def _take_fault(self) -> _WebhookFault | None:
        # call with self.cond held
        for rule in self.faults:
            if rule.times != 0:
                if rule.times > 0:
                    rule.times -= 1
                return rule
        return None

    # -- scheduling ----------------------------------------------------------
    def submit(self, job: _Job, url: str | None) -> None:
        """Queue `job`: its result is produced after the configured delay and,
        if `url` is set, POSTed there (subject to the webhook fault switches)."""
        delay = float(self.state.config.webhook_delay_s)
        now = time.monotonic()
        with self.cond:
            fault = self._take_fault() if url else None
            mode = fault.mode if fault else "normal"
            if mode == "late" and fault is not None:
                delay += float(fault.late_s)
            target = forge_url(url) if (url and mode == "forged_token") else url
            copies = 2 if mode == "duplicate" else 1
            for i in range(copies):
                heapq.heappush(self.heap, _Delivery(now + delay + 0.01 * i, next(self._seq), job, target,
                                                    mode, 1, self.generation))
            self._ensure_thread()
            self.cond.notify_all()

    def pending(self) -> int:
        with self.cond:
            return len(self.heap) + self.in_flight

    def flush(self) -> int:
        """Run everything pending now, on the caller's thread."""
        with self.cond:
            items = sorted(self.heap)
            self.heap.clear()
            self.in_flight += len(items)
        for item in items:
            self._process(item)
        return len(items)

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.heap or self.heap[0].due > time.monotonic():
                    timeout = None if not self.heap else max(0.0, self.heap[0].due - time.monotonic())
                    self.cond.wait(timeout)
                item = heapq.heappop(self.heap)
                self.in_flight += 1
            threading.Thread(target=self._process, args=(item,), daemon=True).start()

    # -- delivery ------------------------------------------------------------
    def _process(self, item: _Delivery) -> None:
        try:
            self._deliver(item)
        finally:
            with self.cond:
                self.in_flight -= 1

    def _deliver(self, item: _Delivery) -> None:
        payload = item.job.result()
        if item.url is None:
            return
        entry = {"id": item.job.id, "kind": item.job.kind, "url": item.url, "attempt": item.attempt,
                 "mode": item.mode, "status_code": None, "error": None, "delivered": False}
        retry = False
        if item.mode == "lose":
            entry["error"] = "lost (webhook fault)"
        else:
            cfg = self.state.config
            kwargs: dict[str, Any] = {"timeout": float(cfg.webhook_timeout_s)}
            if cfg.webhook_verify is not None:
                kwargs["verify"] = cfg.webhook_verify
            try:
                resp = requests.post(item.url, json=payload, **kwargs)
                entry["status_code"] = resp.status_code
                entry["delivered"] = 200 <= resp.status_code < 300
                retry = not entry["delivered"]
            except requests.RequestException as exc:
                entry["error"] = f"{type(exc).__name__}: {exc}"[:300]
                retry = True
        entry["t"] = time.time()
        with self.cond:
            if item.generation != self.generation:
                return  # reset while in flight: forget it
            self.log.append(entry)
            delays = list(self.state.config.webhook_retry_delays_s or [])
            if retry and item.attempt <= len(delays):
                due = time.monotonic() + float(delays[item.attempt - 1])
                heapq.heappush(self.heap, _Delivery(due, next(self._seq), item.job, item.url, item.mode,
                                                    item.attempt + 1, item.generation))
                self._ensure_thread()
                self.cond.notify_all()

    def report(self) -> dict:
        with self.cond:
            return {
                "deliveries": [dict(e) for e in self.log],
                "pending": len(self.heap) + self.in_flight,
                "faults": [f.as_dict() for f in self.faults if f.times != 0],
            }


class CloduraSimState:
    """All mutable simulator state, guarded by one lock."""

    def __init__(self, config: CloduraSimConfig, dataset: Dataset):
        self.initial = copy.deepcopy(config)
        self.dataset = dataset
        self.lock = threading.Lock()
        self.clock = time.monotonic
        self.dispatcher = WebhookDispatcher(self)
        self.reset()

    # -- lifecycle -----------------------------------------------------
    def reset(self) -> None:
        self.dispatcher.reset()
        with self.lock:
            self.config = copy.deepcopy(self.initial)
            self.accounts: dict[str, _Account] = {}
            self.hits: dict[str, list[float]] = {}
            self.jobs: dict[str, _Job] = {}
            for key, plan in self.config.api_keys.items():
                self._open_account(key, plan)

    def _open_account(self, key: str, plan: str) -> None:
        pk = _plan_key(plan)
        acct = _Account(plan=plan)
        if pk in PROSPECT_MAX_CONTACTS:
            acct.max_contacts = PROSPECT_MAX_CONTACTS[pk]
            acct.max_direct_dials = PROSPECT_MAX_DIRECT_DIALS
        else:
            acct.remaining = float(self.config.starting_credits)
        self.accounts[key] = acct
        self.hits[key] = []

    # -- gate ------------------------------------------------------------
    def plan_for(self, key: str | None) -> str | None:
        if not key:
            return None
        with self.lock:
            acct = self.accounts.get(key)
            return acct.plan if acct else None

    def windows_for(self, key: str) -> list[tuple[int, float, bool]]:
        """(count, seconds, is_daily) for a key; call with the lock held."""
        day = float(self.config.day_seconds)
        override = self.config.rate_limits.get(key)
        if override is not None:
            return [(int(c), float(s), float(s) >= day) for c, s in override]
        plan = self.accounts[key].plan
        windows = PLAN_WINDOWS.get(_plan_key(plan), PLAN_WINDOWS["default"])
        return [(c, day if s is DAY else s, s is DAY) for c, s in windows]

    def admit(self, key: str) -> Admission:
        """Sliding-window rate limiting.  A rejected request is not recorded,
        so it does not use up quota.  The daily quota is checked first."""
        with self.lock:
            now = self.clock()
            log = self.hits[key]
            acct = self.accounts[key]
            windows = sorted(self.windows_for(key), key=lambda w: (not w[2], -w[1]))
            for count, seconds, daily in windows:
                start = bisect.bisect_right(log, now - seconds)
                inside = len(log) - start
                if inside >= count:
                    # The request fits once enough of the oldest hits expire.
                    free_at = log[start + inside - count] + seconds if count > 0 else now + seconds
                    retry = max(1, math.ceil(free_at - now))
                    status = 409 if daily else 429
                    acct.counters[f"rejected_{status}"] = acct.counters.get(f"rejected_{status}", 0) + 1
                    kind = "daily quota" if daily else "rate limit"
                    return Admission(False, status, retry, f"{kind} exceeded: {count} requests per {seconds:g} s")
            log.append(now)
            longest = max((w[1] for w in windows), default=0.0)
            cut = bisect.bisect_right(log, now - longest)
            if cut:
                del log[:cut]
            acct.counters["accepted"] = acct.counters.get("accepted", 0) + 1
            return Admission(True)

    def count(self, key: str, name: str) -> None:
        with self.lock:
            acct = self.accounts.get(key)
            if acct is not None:
                acct.counters[name] = acct.counters.get(name, 0) + 1

    def count_call(self, key: str, endpoint: str) -> None:
        with self.lock:
            acct = self.accounts.get(key)
            if acct is not None:
                acct.calls[endpoint] = acct.calls.get(endpoint, 0) + 1

    # -- async jobs --------------------------------------------------------
    def add_job(self, job: _Job) -> None:
        with self.lock:
            self.jobs[job.id] = job

    def job(self, job_id: str, key: str, kind_prefix: str) -> _Job | None:
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None or job.key != key or not job.kind.startswith(kind_prefix):
            return None
        return job

    def can_start_reveal(self, key: str, kind: str) -> bool:
        """402 gate at submission: the balance must cover the cheapest
        charge the result could bring (INFERRED)."""
        with self.lock:
            acct = self.accounts[key]
            if is_prospect(acct.plan):
                if kind == "phone":
                    ok = acct.direct_dials < acct.max_direct_dials and acct.can_cover(1)
                else:
                    ok = acct.can_cover(COST_REVEAL_STANDARD)
            else:
                ok = acct.can_cover(1 if kind == "email" else PHONE_PROVIDER_COST["clodura"])
            if not ok:
                acct.counters["rejected_402"] = acct.counters.get("rejected_402", 0) + 1
            return ok

    def charge_reveal(self, key: str, kind: str, cost: float) -> bool:
        """Charge a produced reveal result.  Prospect plans: email takes
        `cost` contact views (unlock + export); phone takes one direct dial
        plus one contact view (the export)."""
        with self.lock:
            acct = self.accounts.get(key)
            if acct is None:
                return False
            if is_prospect(acct.plan) and kind == "phone":
                if acct.direct_dials + 1 > acct.max_direct_dials or not acct.can_cover(1):
                    return False
                acct.direct_dials += 1
                acct.contacts_view += 1
                acct.spent = round(acct.spent + 2, 6)
                return True
            if not acct.can_cover(cost):
                return False
            acct.charge(cost)
            return True

    # -- credits ---------------------------------------------------------
    def try_charge(self, key: str, cost: float) -> bool:
        """Charge `cost` if the balance covers it; False means 402."""
        with self.lock:
            acct = self.accounts[key]
            if cost > 0 and not acct.can_cover(cost):
                acct.counters["rejected_402"] = acct.counters.get("rejected_402", 0) + 1
                return False
            if cost > 0:
                acct.charge(cost)
            return True

    def credits_body(self, key: str) -> dict:
        with self.lock:
            acct = self.accounts[key]
            if is_prospect(acct.plan):
                # Documented type quirk: maxContacts is a string (docs/clodura.md#balance).
                return {
                    "contactsView": acct.contacts_view,
                    "maxContacts": str(acct.max_contacts),
                    "directDials": acct.direct_dials,
                    "maxDirectDials": acct.max_direct_dials,
                }
            return {"remainingCredits": round(acct.remaining, 4)}

    def usage(self) -> dict:
        with self.lock:
            out = {}
            for key, acct in self.accounts.items():
                entry = {
                    "plan": acct.plan,
                    "remainingCredits": acct.remaining_credits(),
                    "creditsSpent": acct.spent,
                    "accepted": 0,
                    "rejected_429": 0,
                    "rejected_409": 0,
                    "rejected_402": 0,
                    "rejected_400": 0,
                    "rejected_403": 0,
                    **acct.counters,
                    "calls": dict(acct.calls),
                }
                if is_prospect(acct.plan):
                    entry.update(
                        contactsView=acct.contacts_view,
                        maxContacts=acct.max_contacts,
                        directDials=acct.direct_dials,
                        maxDirectDials=acct.max_direct_dials,
                    )
                out[key] = entry
            return out


# -- payload builders -------------------------------------------------------

def organisation_payload(c: Company) -> dict:
    return {
        F["organisation_id"]: c.organisation_id,
        F["organisation_name"]: c.name,
        F["domain"]: c.domain,
        F["org_linkedin_url"]: c.linkedin_url,
        F["industry"]: c.industry,
        F["employee_size"]: c.employee_size,
        F["employee_count"]: c.employee_count,
        F["revenue"]: c.revenue,
        F["founded_year"]: c.founded_year,
        F["org_city"]: c.city,
        F["org_state"]: c.state,
        F["org_country"]: c.country,
    }


def person_payload(p: Person | None, c: Company) -> dict:
    """A person with the nested organisation; `p=None` gives the
    organisation-only shape with every person field null."""
    return {
        F["person_id"]: p.person_id if p else None,
        F["first_name"]: p.first_name if p else None,
        F["last_name"]: p.last_name if p else None,
        F["linkedin_url"]: p.linkedin_url if p else None,
        F["title"]: p.title if p else None,
        F["functional"]: [p.department] if p else None,
        F["seniority"]: [p.seniority] if p else None,
        F["person_city"]: c.city if p else None,
        F["person_state"]: c.state if p else None,
        F["person_country"]: c.country if p else None,
        F["organisation"]: organisation_payload(c),
    }


def verification_payload(email: str, deep: bool, doc_id: str, status: str, result: str) -> dict:
    return {
        F["verify_email"]: email,
        F["verify_deep"]: deep,
        F["verify_doc_id"]: doc_id,
        F["verify_status"]: status,
        F["verify_result"]: result,
        F["verify_at"]: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def deep_verdict(email: str, share: float) -> str:
    """Deep verification of a catch-all address: a deterministic `share`
    of them turn out Deliverable, the rest stay Risky (Catch-all)."""
    return VERDICT_DELIVERABLE if (_h("deep", email.strip().lower()) % 1000) < share * 1000 else VERDICT_CATCH_ALL


_EMAIL_STATUS_FOR_VERDICT = {
    VERDICT_DELIVERABLE: "verified",
    VERDICT_CATCH_ALL: "catch_all",
    VERDICT_UNDELIVERABLE: "guessed",
}


def reveal_email_result(tracking_id: str, plan: str, person: Person | None, person_id: str | None
                        ) -> tuple[dict, float]:
    """The webhook payload (docs/clodura.md#webhook-payloads) for Reveal Email
    and its cost (before charging).

    Standard (Prospect plans): Clodura's own database only; a known person
    whose address is not Undeliverable is found (emailStatus verified or
    catch_all), cost 1 unlock + 1 export.  Multi-Provider: a scripted
    waterfall over EMAIL_PROVIDERS; the person's hash picks the provider that
    finds the address and the cost is its position (1-6 credits); an
    Undeliverable address still comes back as a partner's guess (charged, as
    docs/clodura.md#credits says)."""
    base = {F["tracking_id"]: tracking_id, F["reveal_type"]: "email",
            F["person_id"]: person.person_id if person else person_id}
    if is_prospect(plan):
        if person is None or person.email_verdict == VERDICT_UNDELIVERABLE:
            return {**base, F["job_status"]: JOB_NOT_FOUND, F["email"]: None, F["email_status"]: "unavailable",
                    F["credits_used"]: {"unlock": 0, "export": 0}}, 0
        return {**base, F["job_status"]: JOB_COMPLETED, F["linkedin_url"]: person.linkedin_url,
                F["email"]: person.email, F["email_status"]: _EMAIL_STATUS_FOR_VERDICT[person.email_verdict],
                F["credits_used"]: {"unlock": 1, "export": 1}}, COST_REVEAL_STANDARD
    if person is None:
        providers = [{F["provider"]: name, F["provider_result"]: "not_found"} for name in EMAIL_PROVIDERS]
        return {**base, F["job_status"]: JOB_NOT_FOUND, F["email"]: None, F["email_status"]: "unavailable",
                F["providers"]: providers, F["credits_used"]: 0}, 0
    stop = _h("email-waterfall", person.person_id) % len(EMAIL_PROVIDERS)
    status = _EMAIL_STATUS_FOR_VERDICT[person.email_verdict]
    providers = [{F["provider"]: name, F["provider_result"]: "not_found"} for name in EMAIL_PROVIDERS[:stop]]
    providers.append({F["provider"]: EMAIL_PROVIDERS[stop], F["provider_result"]: "found",
                      F["email"]: person.email, F["email_status"]: status})
    cost = stop + 1
    return {**base, F["job_status"]: JOB_COMPLETED, F["linkedin_url"]: person.linkedin_url,
            F["email"]: person.email, F["email_status"]: status, F["providers"]: providers,
            F["credits_used"]: cost}, cost


def clodura_holds_phone(person: Person) -> bool:
    return (_h("phone-own", person.person_id) % 1000) < CLODURA_HOLDS_PHONE_SHARE * 1000


def reveal_phone_result(tracking_id: str, plan: str, person: Person | None, person_id: str | None,
                        via_partners: bool) -> tuple[dict, float]:
    """The webhook payload (docs/clodura.md#webhook-payloads) for Reveal Phone
    and its cost.  Clodura's own database holds the mobile of a deterministic
    60% of known people; Standard plans see only those.  Multi-Provider plans
    with revealPhoneNumberViaPartners=true fall through to one scripted partner;
    cost is the finding provider's price (10-20 credits)."""
    base = {F["tracking_id"]: tracking_id, F["reveal_type"]: "phone",
            F["person_id"]: person.person_id if person else person_id}
    own = person is not None and clodura_holds_phone(person)
    if is_prospect(plan):
        if not own:
            return {**base, F["job_status"]: JOB_NOT_FOUND, F["phone_numbers"]: [],
                    F["credits_used"]: {"phone": 0, "export": 0}}, 0
        assert person is not None  # own: a person Clodura holds the phone of
        return {**base, F["job_status"]: JOB_COMPLETED,
                F["phone_numbers"]: [{F["phone_number"]: person.mobile_phone, F["phone_type"]: "mobile"}],
                F["credits_used"]: {"phone": 1, "export": 1}}, COST_REVEAL_STANDARD
    providers = [{F["provider"]: "clodura", F["provider_result"]: "found" if own else "not_found"}]
    finder = "clodura" if own else None
    if not own and via_partners:
        stop = _h("phone-waterfall", person.person_id if person else person_id) % len(PHONE_PARTNERS)
        for i, name in enumerate(PHONE_PARTNERS[: stop + 1]):
            found = person is not None and i == stop
            providers.append({F["provider"]: name, F["provider_result"]: "found" if found else "not_found"})
            if found:
                finder = name
        if person is None:
            providers += [{F["provider"]: n, F["provider_result"]: "not_found"} for n in PHONE_PARTNERS[stop + 1:]]
    if finder is None:
        return {**base, F["job_status"]: JOB_NOT_FOUND, F["phone_numbers"]: [], F["providers"]: providers,
                F["credits_used"]: 0}, 0
    cost = PHONE_PROVIDER_COST[finder]
    assert person is not None  # a finder found a known person's phone
    return {**base, F["job_status"]: JOB_COMPLETED,
            F["phone_numbers"]: [{F["phone_number"]: person.mobile_phone, F["phone_type"]: "mobile",
                                  F["provider"]: finder}],
            F["providers"]: providers, F["credits_used"]: cost}, cost


_LANGUAGES = ["Python", "TypeScript", "Java", "Go", "Ruby", "C#", "Kotlin", "PHP", "Scala", "Rust"]
_OPERATING_SYSTEMS = ["Linux", "Windows Server", "macOS", "Ubuntu", "Red Hat Enterprise Linux"]
_ROUNDS = ["Seed", "Series A", "Series B", "Series C", "Series D"]
_INVESTORS = ["Sample Ventures", "Example Capital", "Placeholder Partners", "Demo Growth Fund",
              "Fictional Seed Co", "Test Horizon VC"]


def _money(amount_m: float) -> str:
    return f"{amount_m:g}M"


def organisation_enrich_payload(c: Company, technographics: bool, acquisitions: bool, funding: bool,
                                dataset: Dataset, cost: int) -> dict:
    """The docs/clodura.md#organisation-enrich response built from the dataset
    company; optional components are absent unless requested (INFERRED).  Everything not in the dataset is
    derived deterministically from the organisation id."""
    rng = random.Random(_h("org", c.organisation_id))
    rounds: list[dict] = []
    if c.total_funding:
        total = float(c.total_funding.rstrip("M"))
        n = min(len(_ROUNDS), 1 + rng.randrange(3)) if total >= 3 else 1
        weights = [rng.uniform(1, 3) * (i + 1) for i in range(n)]
        for i, w in enumerate(weights):
            amount = round(total * w / sum(weights), 1)
            year = min(2025, max(c.founded_year, 2000) + 2 * (i + 1) + rng.randrange(2))
            rounds.append({"roundType": _ROUNDS[i], "amount": _money(amount), "currency": "USD",
                           "date": f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                           "investors": sorted(rng.sample(_INVESTORS, rng.randint(1, 3)))})
    body = {
        F["organisation_id"]: c.organisation_id,
        F["org_linkedin_url"]: c.linkedin_url,
        F["organisation_name"]: c.name,
        F["domain"]: c.domain,
        F["founded_year"]: c.founded_year,
        F["industry"]: c.industry,
        F["employee_size"]: c.employee_size,
        F["employee_count"]: c.employee_count,
        F["revenue"]: c.revenue,
        F["address"]: {"street": f"{rng.randint(1, 999)} Sample Way", "city": c.city, "state": c.state,
                       "country": c.country, "postalCode": f"{rng.randint(10000, 99999)}"},
        F["boardline_numbers"]: [f"+1555{_h('board', c.organisation_id) % 10_000_000:07d}"],
        F["financials"]: {F["total_funding"]: c.total_funding,
                          F["last_funding_type"]: rounds[-1]["roundType"] if rounds else None},
    }
    if technographics:
        body[F["technographics"]] = {
            "technologies": list(c.technologies),
            "programmingLanguages": sorted(rng.sample(_LANGUAGES, rng.randint(1, 4))),
            "operatingSystems": sorted(rng.sample(_OPERATING_SYSTEMS, rng.randint(1, 2))),
            "products": [t for t in c.technologies if t in ("Slack", "Zoom", "Jira", "Confluence", "Zendesk")],
        }
    if acquisitions:
        others = [o for o in dataset.companies if o.organisation_id != c.organisation_id]
        count = rng.choice([0, 0, 1, 1, 2]) if c.employee_count > 200 else 0
        body[F["acquisitions"]] = [
            {F["organisation_name"]: o.name, "acquiredOn": f"{rng.randint(2012, 2024)}-{rng.randint(1, 12):02d}-01",
             "relationship": "acquired"}
            for o in rng.sample(others, count)
        ]
    if funding:
        body[F["funding"]] = rounds
    body[F["credits_used"]] = cost
    return body


def _error(status: int, message: str, headers: dict | None = None):
    resp = jsonify({F["error_status"]: status, F["error_message"]: message})
    resp.status_code = status
    if headers:
        resp.headers.update(headers)
    return resp


# -- the app ------------------------------------------------------------------

# Config fields the control API may change at run time, with their converters.
_ASYNC_CONFIG: dict[str, Callable] = {
    "webhook_delay_s": float,
    "webhook_retry_delays_s": lambda v: [float(x) for x in v],
    "webhook_timeout_s": float,
    "webhook_verify": lambda v: v if isinstance(v, (bool, str)) or v is None else str(v),
    "catch_all_202_on_standard": bool,
    "deep_catch_all_deliverable_share": float,
}

def create_clodura_app(config: CloduraSimConfig | None = None, dataset: Dataset | None = None) -> Flask:
    config = config or CloduraSimConfig()
    dataset = dataset or build_dataset()
    app = Flask("clodura_sim")
    recorder = SandboxRecorder("clodura")
    install_recorder(app, recorder)
    state = CloduraSimState(config, dataset)
    app.extensions["clodura_sim"] = state
    app.extensions["clodura_recorder"] = recorder

    def refuse(status: int, message: str, headers: dict | None = None):
        if status in (400, 403):
            state.count(g.clodura_key, f"rejected_{status}")
        return _error(status, message, headers)

    @app.before_request
    def _gate():
        # Runs after install_recorder's fault hook; control paths are exempt.
        if not request.path.startswith("/api/"):
            return None
        rule = request.url_rule.rule if request.url_rule is not None else request.path
        g.sandbox_extra["endpoint"] = rule.removeprefix("/api/v1/")
        g.sandbox_extra["credits"] = 0
        key = request.headers.get("X-API-KEY", "").strip()
        plan = state.plan_for(key)
        if plan is None:
            return _error(401, "Invalid or missing API key")
        g.clodura_key, g.clodura_plan = key, plan
        g.sandbox_extra["plan"] = plan
        admission = state.admit(key)
        if not admission.ok:
            return _error(admission.status, admission.message, {"Retry-After": str(admission.retry_after)})
        state.count_call(key, g.sandbox_extra["endpoint"])
        return None

    def json_body():
        body = request.get_json(silent=True)
        return body if isinstance(body, dict) else None

    # -- GET /credits (docs/clodura.md#balance) ------------------------------
    @app.get("/api/v1/credits")
    def credits():
        return jsonify(state.credits_body(g.clodura_key))

    # -- POST /cleanup/enrich (docs/clodura.md#person-enrich) ---------------
    @app.post("/api/v1/cleanup/enrich")
    def enrich():
        body = json_body()
        if body is None:
            return refuse(400, "Request body must be a JSON object")
        ids = {}
        for name in ENRICH_IDENTIFIERS:
            value = body.get(name)
            if value is None:
                continue
            if not isinstance(value, str):
                return refuse(400, f"{name} must be a string")
            if value.strip():
                ids[name] = value.strip()
        if not ids:
            return refuse(400, "At least one identifier is required: " + ", ".join(ENRICH_IDENTIFIERS))
        g.sandbox_extra["subject"] = subject(ids)

        person = dataset.find_person(
            linkedin_url=ids.get("linkedinUrl"),
            email=ids.get("email"),
            first_name=ids.get("firstName"),
            last_name=ids.get("lastName"),
            organisation_name=ids.get("organisationName"),
            org_linkedin_url=ids.get("orgLinkedinUrl"),
        )
        if person is not None:
            company, cost, outcome = dataset.company(person.organisation_id), COST_ENRICH_FULL, "person"
        else:
            company = dataset.company_by_linkedin(ids.get("orgLinkedinUrl")) or dataset.company_by_name(
                ids.get("organisationName")
            )
            cost, outcome = (COST_ENRICH_ORG_ONLY, "organisation") if company else (0, "none")
        g.sandbox_extra["outcome"] = outcome

        if not state.try_charge(g.clodura_key, cost):
            return _error(402, "Insufficient credits")
        g.sandbox_extra["credits"] = cost
        data = [person_payload(person, company)] if company is not None else []
        return jsonify({F["enrich_data"]: data, F["credits_used"]: cost})

    # -- POST /verify/email (docs/clodura.md#email-verification) --------------
    def decide_verification(email: str, deep: bool, webhook: str | None) -> str | None:
        """The final verdict if the check finishes synchronously (200), or
        None to queue the job (202 + webhook).  Catch-all domains are queued
        for deep checks, and for standard checks that carry a webhookUrl when
        `catch_all_202_on_standard` is on."""
        verdict = dataset.verdict_for_email(email)
        if verdict == VERDICT_CATCH_ALL and (deep or (state.config.catch_all_202_on_standard and webhook)):
            return None
        return verdict

    def valid_webhook(value) -> bool:
        return isinstance(value, str) and re.match(r"^https?://[^\s/]+", value) is not None

    @app.post("/api/v1/verify/email")
    def verify_email():
        if _plan_key(g.clodura_plan) not in VERIFY_PLANS:
            return refuse(403, f"Email verification is not available on the {g.clodura_plan} plan")
        body = json_body()
        if body is None:
            return refuse(400, "Request body must be a JSON object")
        email = body.get("email")
        if not isinstance(email, str) or not email.strip():
            return refuse(400, "email is required")
        email = email.strip()
        if not _EMAIL_RE.match(email):
            return refuse(400, "email is not a valid address")
        g.sandbox_extra["subject"] = subject({"email": email.lower()})
        deep = body.get("deepVerification", False)
        if deep is None:
            deep = False
        if not isinstance(deep, bool):
            return refuse(400, "deepVerification must be a boolean")
        webhook = body.get("webhookUrl")
        if webhook is not None and not valid_webhook(webhook):
            return refuse(400, "webhookUrl must be an http(s) URL")

        cost = COST_VERIFY_DEEP if deep else COST_VERIFY_STANDARD
        if not state.try_charge(g.clodura_key, cost):
            return _error(402, "Insufficient credits")
        g.sandbox_extra["credits"] = cost
        doc_id = f"vrf_{uuid.uuid4().hex[:8]}"
        verdict = decide_verification(email, deep, webhook)
        if verdict is not None:
            g.sandbox_extra["outcome"] = verdict
            payload = verification_payload(email, deep, doc_id, VERIFY_STATUS_DONE, verdict)
            state.add_job(_Job(doc_id, "verify", g.clodura_key, payload, payload=payload))
            return jsonify(payload)

        share = float(state.config.deep_catch_all_deliverable_share)

        def produce(email=email, deep=deep, doc_id=doc_id) -> dict:
            final = deep_verdict(email, share) if deep else VERDICT_CATCH_ALL
            return verification_payload(email, deep, doc_id, VERIFY_STATUS_DONE, final)

        pending = verification_payload(email, deep, doc_id, VERIFY_STATUS_PENDING, VERIFY_RESULT_PENDING)
        job = _Job(doc_id, "verify", g.clodura_key, pending, produce)
        state.add_job(job)
        state.dispatcher.submit(job, webhook)
        g.sandbox_extra["outcome"] = "queued"
        resp = jsonify(pending)
        resp.status_code = 202
        return resp

    @app.get("/api/v1/verify/email/<doc_id>")
    def verify_email_poll(doc_id: str):
        # INFERRED polling endpoint (docs/clodura.md#polling); free.
        job = state.job(doc_id, g.clodura_key, "verify")
        if job is None:
            return _error(404, f"Unknown docId {doc_id!r}")
        return jsonify(job.current())

    # -- reveal email / phone, async (docs/clodura.md#reveal-email, docs/clodura.md#reveal-phone) --
    def reveal_person(body: dict, allow_names: bool):
        """(person or None, personId echoed, error message or None)."""
        for name in ("personId", "linkedinUrl", "firstName", "lastName", "companyDomain"):
            value = body.get(name)
            if value is not None and not isinstance(value, str):
                return None, None, f"{name} must be a string"
        pid = (body.get("personId") or "").strip()
        li = (body.get("linkedinUrl") or "").strip()
        first = (body.get("firstName") or "").strip()
        last = (body.get("lastName") or "").strip()
        domain = (body.get("companyDomain") or "").strip()
        if li:
            low = li.lower()
            if "linkedin.com/sales/" in low:
                return None, None, "Sales Navigator URLs are not accepted; use a linkedin.com/in/ profile URL"
            if "linkedin.com/in/" not in low:
                return None, None, "linkedinUrl must be a linkedin.com/in/ profile URL"
        if allow_names and domain and ("www." in domain.lower() or "@" in domain or "/" in domain):
            return None, None, "companyDomain must be a bare domain (no www., @ or path)"
        if pid:
            return dataset.person(pid), pid, None
        if li:
            return dataset.find_person(linkedin_url=li), None, None
        if allow_names and (first or last or domain):
            if not (first and last and domain):
                return None, None, "firstName, lastName and companyDomain must be given together"
            return dataset.find_person(first_name=first, last_name=last, company_domain=domain), None, None
        options = "personId, linkedinUrl, or firstName + lastName + companyDomain" if allow_names \
            else "personId or linkedinUrl"
        return None, None, f"One identifier option is required: {options}"

    def submit_reveal(kind: str, person: Person | None, pid: str | None, webhook: str | None,
                      via_partners: bool = False):
        key, plan = g.clodura_key, g.clodura_plan
        if not state.can_start_reveal(key, kind):
            return _error(402, "Insufficient credits")
        tracking_id = f"trk_{uuid.uuid4().hex[:10]}"

        def produce() -> dict:
            if kind == "email":
                payload, cost = reveal_email_result(tracking_id, plan, person, pid)
            else:
                payload, cost = reveal_phone_result(tracking_id, plan, person, pid, via_partners)
            if cost and not state.charge_reveal(key, kind, cost):
                zero = {k: 0 for k in payload[F["credits_used"]]} \
                    if isinstance(payload[F["credits_used"]], dict) else 0
                payload = {F["tracking_id"]: tracking_id, F["reveal_type"]: kind,
                           F["person_id"]: payload.get(F["person_id"]), F["job_status"]: JOB_FAILED,
                           F["error_message"]: "Insufficient credits", F["credits_used"]: zero}
            return payload

        pending = {F["tracking_id"]: tracking_id, F["reveal_type"]: kind, F["job_status"]: JOB_QUEUED}
        job = _Job(tracking_id, f"reveal_{kind}", key, pending, produce)
        state.add_job(job)
        state.dispatcher.submit(job, webhook)
        g.sandbox_extra["outcome"] = "queued"
        g.sandbox_extra["trackingId"] = tracking_id
        return jsonify({F["tracking_id"]: tracking_id, F["job_status"]: JOB_QUEUED})

    @app.post("/api/v1/search/people/email/match")
    def reveal_email():
        body = json_body()
        if body is None:
            return refuse(400, "Request body must be a JSON object")
        webhook = body.get("webhookUrl")
        if not valid_webhook(webhook):
            return refuse(400, "webhookUrl is required and must be an http(s) URL")
        person, pid, problem = reveal_person(body, allow_names=True)
        if problem:
            return refuse(400, problem)
        return submit_reveal("email", person, pid, webhook)

    @app.post("/api/v1/search/people/phone/match")
    def reveal_phone():
        body = json_body()
        if body is None:
            return refuse(400, "Request body must be a JSON object")
        partners = body.get("revealPhoneNumberViaPartners", False)
        if partners is None:
            partners = False
        if not isinstance(partners, bool):
            return refuse(400, "revealPhoneNumberViaPartners must be a boolean")
        webhook = body.get("webhookUrl")
        if webhook is not None and not valid_webhook(webhook):
            return refuse(400, "webhookUrl must be an http(s) URL")
        if partners and webhook is None:
            return refuse(400, "webhookUrl is required when revealPhoneNumberViaPartners is true")
        person, pid, problem = reveal_person(body, allow_names=False)
        if problem:
            return refuse(400, problem)
        return submit_reveal("phone", person, pid, webhook, partners)

    @app.get("/api/v1/search/people/track/<tracking_id>")
    def track(tracking_id: str):
        # INFERRED (docs/clodura.md#polling): free; the webhook body once done, else the queued stub.
        job = state.job(tracking_id, g.clodura_key, "reveal_")
        if job is None:
            return _error(404, f"Unknown trackingId {tracking_id!r}")
        return jsonify(job.current())

    # -- POST /organisation/search (docs/clodura.md#organisation-search) ------
    @app.post("/api/v1/organisation/search")
    def organisation_search():
        """The filters the simulator can evaluate: organisationId (list),
        domain, organisationName and industry (list); the others in
        docs/clodura.md#organisation-search are accepted and ignored. Free
        (INFERRED, docs/clodura.md#credits)."""
        body = json_body()
        if body is None:
            return refuse(400, "Request body must be a JSON object")
        ids, domain, name, industries = (body.get(k) for k in
                                         ("organisationId", "domain", "organisationName", "industry"))
        if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
            return refuse(400, "organisationId must be an array of strings")
        if industries is not None and not (isinstance(industries, list)
                                           and all(isinstance(i, str) for i in industries)):
            return refuse(400, "industry must be an array of strings")
        for field_name, value in (("domain", domain), ("organisationName", name)):
            if value is not None and not isinstance(value, str):
                return refuse(400, f"{field_name} must be a string")
        if not (ids or (domain or "").strip() or (name or "").strip() or industries):
            return refuse(400, "At least one filter is required")
        page, per_page = body.get("page", 1), body.get("perPage", 25)
        if not isinstance(page, int) or not 1 <= page <= 500:
            return refuse(400, "page must be an integer from 1 to 500")
        if not isinstance(per_page, int) or not 1 <= per_page <= 100:
            return refuse(400, "perPage must be an integer from 1 to 100")
        bare = (domain or "").strip().lower()
        if "@" in bare or "/" in bare or bare.startswith("www."):
            return refuse(400, "domain must be a bare primary domain (no www., @ or path)")

        found = dataset.companies
        if ids:
            found = [c for c in found if c.organisation_id in set(ids)]
        if (domain or "").strip():
            match = dataset.company_by_domain(domain)
            found = [c for c in found if c is match]
        if (name or "").strip():
            match = dataset.company_by_name(name)
            found = [c for c in found if c is match]
        if industries:
            wanted = {i.strip().lower() for i in industries}
            found = [c for c in found if c.industry.lower() in wanted]
        start = (page - 1) * per_page
        g.sandbox_extra["outcome"] = "organisation" if found else "none"
        return jsonify({
            "pagination": {"page": page, "perPage": per_page, "totalRecords": len(found),
                           "totalPages": max(1, math.ceil(len(found) / per_page))},
            "organisations": [organisation_payload(c) for c in found[start:start + per_page]],
        })

    # -- POST /organisation/enrich (docs/clodura.md#organisation-enrich) ------
    @app.post("/api/v1/organisation/enrich")
    def organisation_enrich():
        body = json_body()
        if body is None:
            return refuse(400, "Request body must be a JSON object")
        org_id, org_li = body.get("organisationId"), body.get("orgLinkedinUrl")
        for name, value in (("organisationId", org_id), ("orgLinkedinUrl", org_li)):
            if value is not None and not isinstance(value, str):
                return refuse(400, f"{name} must be a string")
        org_id, org_li = (org_id or "").strip(), (org_li or "").strip()
        if not org_id and not org_li:
            return refuse(400, "organisationId or orgLinkedinUrl is required")
        flags = {}
        for name in ORG_COMPONENTS:
            value = body.get(name, False)
            if value is None:
                value = False
            if not isinstance(value, bool):
                return refuse(400, f"{name} must be a boolean")
            flags[name] = value
        company = dataset.company(org_id) if org_id else dataset.company_by_linkedin(org_li)
        if company is None:
            g.sandbox_extra["outcome"] = "none"
            return _error(404, "Organisation not found")
        cost = COST_ORG_ENRICH_BASE + sum(flags.values())
        if not state.try_charge(g.clodura_key, cost):
            return _error(402, "Insufficient credits")
        g.sandbox_extra["credits"] = cost
        g.sandbox_extra["outcome"] = "organisation"
        return jsonify(organisation_enrich_payload(
            company, flags["includeTechnographics"], flags["includeAcquisitions"], flags["includeFunding"],
            dataset, cost))

    # -- POST /organisation/jobpost, /organisation/news (docs/clodura.md#job-posts, #company-news)
    install_signal_routes(app, dataset, json_body, refuse, _error,
                          lambda cost: state.try_charge(g.clodura_key, cost))
    # People search (docs/clodura.md#people-search) lives in its own module.
    from .clodura_search import install_people_search
    install_people_search(app, state, dataset, refuse, _error)

    @app.errorhandler(404)
    def _not_found(_e):
        return _error(404, "Not found")

    @app.errorhandler(405)
    def _not_allowed(_e):
        return _error(405, "Method not allowed")

    # -- control API -------------------------------------------------------------
    @app.get("/_sandbox/clodura/usage")
    def control_usage():
        return jsonify(state.usage())

    @app.post("/_sandbox/clodura/credits")
    def control_credits():
        spec = request.get_json(silent=True) or {}
        key = spec.get("key")
        with state.lock:
            acct = state.accounts.get(key)
            if acct is None:
                return _error(404, f"unknown key {key!r}")
            try:
                if "remainingCredits" in spec:
                    value = float(spec["remainingCredits"])
                    if is_prospect(acct.plan):
                        acct.contacts_view = max(0, acct.max_contacts - int(value))
                    else:
                        acct.remaining = value
                for name, attr in (("contactsView", "contacts_view"), ("directDials", "direct_dials"),
                                   ("maxContacts", "max_contacts"), ("maxDirectDials", "max_direct_dials")):
                    if name in spec:
                        setattr(acct, attr, int(spec[name]))
            except (TypeError, ValueError):
                return _error(400, "credit values must be numbers")
        return jsonify(state.usage()[key])

    def config_body() -> dict:
        with state.lock:
            return {
                "api_keys": dict(state.config.api_keys),
                "day_seconds": state.config.day_seconds,
                "rate_limits": {k: state.windows_for(k) for k in state.accounts},
                "overrides": {k: [list(w) for w in v] for k, v in state.config.rate_limits.items()},
                **{name: getattr(state.config, name) for name in _ASYNC_CONFIG},
            }

    @app.get("/_sandbox/clodura/config")
    def control_get_config():
        return jsonify(config_body())

    @app.post("/_sandbox/clodura/config")
    def control_config():
        spec = request.get_json(silent=True) or {}
        try:
            limits = {}
            for key, windows in (spec.get("rate_limits") or {}).items():
                limits[key] = None if windows is None else [(int(c), float(s)) for c, s in windows]
            day = float(spec["day_seconds"]) if "day_seconds" in spec else None
            keys = {str(k): str(v) for k, v in (spec.get("api_keys") or {}).items()}
            async_changes = {name: conv(spec[name]) for name, conv in _ASYNC_CONFIG.items() if name in spec}
        except (TypeError, ValueError):
            return _error(400, "rate_limits must map keys to [[count, seconds], ...]; day_seconds a number")
        with state.lock:
            for key, plan in keys.items():
                state.config.api_keys[key] = plan
                state._open_account(key, plan)
            for key, windows in limits.items():
                if windows is None:
                    state.config.rate_limits.pop(key, None)
                else:
                    state.config.rate_limits[key] = windows
            if day is not None:
                state.config.day_seconds = day
            for name, value in async_changes.items():
                setattr(state.config, name, value)
        return jsonify(config_body())

    @app.post("/_sandbox/clodura/webhook-faults")
    def control_webhook_faults():
        spec = request.get_json(silent=True)
        rules = spec if isinstance(spec, list) else [spec or {}]
        faults = []
        for r in rules:
            mode = r.get("mode") if isinstance(r, dict) else None
            if mode not in WEBHOOK_FAULT_MODES:
                return _error(400, "mode must be one of " + ", ".join(WEBHOOK_FAULT_MODES))
            try:
                faults.append(_WebhookFault(mode, int(r.get("times", 1)), float(r.get("late_s", 0.0))))
            except (TypeError, ValueError):
                return _error(400, "times must be an integer and late_s a number")
        for f in faults:
            state.dispatcher.add_fault(f)
        return jsonify(state.dispatcher.report()["faults"])

    @app.get("/_sandbox/clodura/webhook-faults")
    def control_get_webhook_faults():
        return jsonify(state.dispatcher.report()["faults"])

    @app.delete("/_sandbox/clodura/webhook-faults")
    def control_clear_webhook_faults():
        state.dispatcher.clear_faults()
        return "", 204

    @app.post("/_sandbox/clodura/flush-webhooks")
    def control_flush_webhooks():
        flushed = state.dispatcher.flush()
        return jsonify({"flushed": flushed, "pending": state.dispatcher.pending()})

    @app.get("/_sandbox/clodura/webhooks")
    def control_webhooks():
        return jsonify(state.dispatcher.report())

    @app.post("/_sandbox/clodura/reset")
    def control_reset():
        state.reset()
        recorder.reset()
        return "", 204

    return app
