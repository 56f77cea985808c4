"""Clearout API v2 simulator (docs/clearout.md).

Pipeline for every `/v2/...` request (docs/clearout.md#authentication,
docs/clearout.md#rate-limits, docs/clearout.md#error-codes):

    token check (401 / code 1000, before routing) -> fixed-window rate limit per
    token and endpoint family (429 / code 1030; x-ratelimit-* headers on every
    answer to a valid token) -> content type (415) -> validation (400, Joi-style
    `reasons`, no code) -> credits (402 / 1002 verify, 1099 finder) -> work.

Endpoints: POST /v2/email_verify/instant, GET /v2/email_verify/getcredits,
POST /v2/email_finder/instant, GET /v2/email_finder/instant/queue_status?qid=;
the public company autocomplete (clearout_autocomplete.py); and in
clearout_lookup.py GET /v2/reverse_lookup/{email,linkedin} and
POST /v2/email/verify/{catchall,disposable,business,free,role,gibberish}.
`?response=flat` flattens nested objects inside `data` (INFERRED rule,
docs/clearout.md#flat-responses).

Simulated time: every verification / search has a deterministic simulated
duration (`time_taken`, ms).  When it exceeds the request's `timeout` the
answer is 524 at once (no real waiting).  Verification: 200-1,400 ms.  Finder:
1-5 s for most searches, 35-60 s for a deterministic ~25% (so the default
30 s finder timeout answers 524 + `queue_id`; the queued search completes
`finder_queue_delay_s` of real time later).

Control API (no token, no rate limit; /_sandbox/log and /_sandbox/faults come
from common.py):

    GET  /_sandbox/clearout/usage   {"available_credits", "credits_spent", "requests",
                                     "rejected_401", "rejected_402", "rate_limited",
                                     "timeouts_524", "daily_verify_count",
                                     "calls": {endpoint: n}, "slow": {"verify": n, "finder": n}}
    GET  /_sandbox/clearout/config  effective config
    POST /_sandbox/clearout/config  {"rate_limit_per_minute": n, "rate_limit_window_s": s,
                                     "credits": n, "daily_verify_limit": n|null,
                                     "finder_queue_delay_s": s, "api_tokens": [...]}
    POST /_sandbox/clearout/slow    {"times": n, "kind": "verify"|"finder"}: the next n
                                     instant verifications (or finder searches) exceed
                                     their timeout -> 524; answers {"verify": n, "finder": m}
    POST /_sandbox/clearout/reset   everything back to the starting state
"""
from __future__ import annotations

import copy
import hashlib
import math
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask, g, jsonify, request

from .clearout_autocomplete import PATHS as PUBLIC_PATHS
from .clearout_autocomplete import install_autocomplete
from .common import SandboxRecorder, install_recorder
from .dataset import (
    VERDICT_CATCH_ALL,
    VERDICT_DELIVERABLE,
    VERDICT_UNDELIVERABLE,
    Dataset,
    Person,
    build_dataset,
)

PREFIX = "/v2"

# Error codes (docs/clearout.md#error-codes)
E_TOKEN = 1000
E_NO_CREDITS = 1002
E_DAILY_LIMIT = 1017
E_NOT_FOUND = 1027
E_RATE_LIMIT = 1030
E_NAME_CHARS = 1088
E_FINDER_CREDITS = 1099
E_QUEUE_ID = 1104

VERIFY_TIMEOUT_DEFAULT = 130_000
VERIFY_TIMEOUT_MAX = 180_000
FINDER_TIMEOUT_DEFAULT = 30_000
FINDER_TIMEOUT_MAX = 180_000  # INFERRED
COST_VERIFY = 1
COST_FINDER = 4
COST_FINDER_ROLE = 2
LOW_CREDIT_THRESHOLD = 50

# Sub-status codes (docs/clearout.md#sub-statuses): code -> (desc, status, bounce_type)
SUB_STATUS: dict[int, tuple[str, str, str]] = {
    200: ("Success", "valid", ""),
    400: ("Syntax Error", "invalid", "hard"),
    401: ("Probably a Spam Trap", "invalid", "soft"),
    402: ("Mail Server Connection Timeout", "unknown", ""),
    403: ("Domain not Found", "invalid", "hard"),
    404: ("Not a Mail Server", "invalid", "hard"),
    405: ("Mail Server Temporary Error", "unknown", ""),
    406: ("Mailbox not Found", "invalid", "hard"),
    407: ("Greylisted", "unknown", ""),
    411: ("Catch All Mail Server", "catch_all", ""),
    412: ("Unable to Determine, Retry Later", "unknown", ""),
    413: ("Mailbox Quota Exceeded", "invalid", "soft"),
    414: ("Verification Refused, Retry Later", "unknown", ""),
    416: ("No Answer from Authoritative Server", "unknown", ""),
    417: ("DNS Query Timeout", "unknown", ""),
    418: ("DNS Query Unhandled Error", "unknown", ""),
    419: ("Insufficient System Resource", "invalid", "soft"),
    420: ("Mail Server Command Timeout", "unknown", ""),
    421: ("Message Receiving Limit Reached", "invalid", "soft"),
    428: ("Account Inactive", "invalid", "soft"),
    601: ("Email Address Allowlisted", "valid", ""),
    602: ("Email Address Blocklisted", "invalid", ""),
    603: ("Domain Allowlisted", "valid", ""),
    604: ("Domain Blocklisted", "invalid", ""),
    606: ("Unsupported Character", "invalid", "hard"),
    701: ("Account Disabled", "invalid", "hard"),
}

# Test addresses (docs/clearout.md#test-addresses): local part -> (sub_status, safe_to_send, overrides).
# status and the default bounce type follow from SUB_STATUS; overrides win.
TEST_ADDRESSES: dict[str, tuple[int, str, dict]] = {
    "valid": (200, "yes", {}),
    "invalid": (406, "no", {"bounce_type": "hard"}),
    "catch_all": (411, "risky", {}),
    "unknown": (412, "unknown", {}),
    "safe_to_send_yes": (200, "yes", {}),
    "safe_to_send_no": (406, "no", {}),
    "safe_to_send_risky": (411, "risky", {}),
    "disposable": (200, "no", {"disposable": "yes"}),
    "role": (200, "risky", {"role": "yes"}),
    "free": (200, "yes", {"free": "yes"}),
    "gibberish": (200, "risky", {"gibberish": "yes"}),
    "hard_bounce": (406, "no", {"bounce_type": "hard"}),
    "soft_bounce": (413, "no", {"bounce_type": "soft"}),
    "suggested_email_address": (403, "no", {"suggested_email_address": "suggested_email_address@example.org",
                                            "bounce_type": "hard"}),
    "syntax_error": (400, "no", {"bounce_type": "hard"}),
    "greylisted": (407, "unknown", {}),
    "spamtrap": (401, "no", {"bounce_type": "soft"}),
    "blocklist_email_address": (602, "no", {}),
    "allowlist_email_address": (601, "yes", {}),
    "blocklist_domain": (604, "no", {}),
    "allowlist_domain": (603, "yes", {}),
    "domain_not_found": (403, "no", {"bounce_type": "hard"}),
    "not_a_mailserver": (404, "no", {"bounce_type": "hard"}),
    "mailbox_not_found": (406, "no", {"bounce_type": "hard"}),
    "mailbox_quota_exceeded": (413, "no", {"bounce_type": "soft"}),
    "dns_query_timeout": (417, "unknown", {}),
    "unroutable_mailserver": (404, "no", {"bounce_type": "hard"}),
    "overquota_and_inactive": (428, "no", {"bounce_type": "soft"}),
    "receiving_limit_reached": (421, "no", {"bounce_type": "soft"}),
}
TEST_ALIASES = {
    "blacklisted_email_address": "blocklist_email_address",
    "whitelisted_email_address": "allowlist_email_address",
    "blacklisted_domain": "blocklist_domain",
    "whitelisted_domain": "allowlist_domain",
}
TEST_DOMAIN = "example.com"

FREE_PROVIDERS = {"gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "aol.com", "icloud.com",
                  "proton.me", "protonmail.com", "gmx.com", "mail.com", "yandex.com", "zoho.com"}
DISPOSABLE_DOMAINS = {"mailinator.com", "10minutemail.com", "guerrillamail.com", "trashmail.com",
                      "tempmail.test", "yopmail.com"}
ROLE_LOCALS = {"info", "sales", "support", "admin", "contact", "hello", "office", "billing", "hr",
               "jobs", "careers", "marketing", "help", "team", "noreply", "no-reply", "postmaster",
               "webmaster", "accounts", "enquiries"}

_EMAIL_SYNTAX = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_NAME_OK = re.compile(r"^[^\W\d_]+(?:[ .'\-][^\W\d_]*)*\.?$", re.UNICODE)

FAMILIES = ("verify", "finder", "other")


def _h(*parts: object) -> int:
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class ClearoutSimConfig:
    api_tokens: list[str] = field(default_factory=lambda: ["sandbox-clearout-token"])
    starting_credits: int = 10000
    # docs/clearout.md#rate-limits: fixed window per token and endpoint family (verify / finder / other).
    rate_limit_per_minute: int = 100
    rate_limit_window_s: float = 60.0
    # Daily verify limit (docs/clearout.md#rate-limits; code 1017, HTTP 200 failed envelope); None = off.
    daily_verify_limit: int | None = None
    day_seconds: float = 86400.0
    # Real seconds a queued finder search (524 + queue_id) takes to complete.
    finder_queue_delay_s: float = 1.0
    # Share of finder searches whose simulated duration exceeds 30 s.
    finder_slow_share: float = 0.25


class _Window:
    __slots__ = ("start", "count")

    def __init__(self, start: float):
        self.start = start
        self.count = 0


@dataclass
class _QueuedSearch:
    qid: str
    ready_at: float
    result: tuple[dict | None, int]   # (data or None for not found, cost)
    charged: bool = False


class ClearoutSimState:
    def __init__(self, config: ClearoutSimConfig, dataset: Dataset):
        self.initial = copy.deepcopy(config)
        self.dataset = dataset
        self.lock = threading.Lock()
        self.clock = time.monotonic
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.config = copy.deepcopy(self.initial)
            self.credits = int(self.config.starting_credits)
            self.spent = 0
            self.windows: dict[tuple[str, str], _Window] = {}
            self.day_start = self.clock()
            self.daily_verify_count = 0
            self.slow = {"verify": 0, "finder": 0}
            self.queue: dict[str, _QueuedSearch] = {}
            self.counters: dict[str, int] = {}
            self.calls: dict[str, int] = {}

    def bump(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.counters[name] = self.counters.get(name, 0) + n

    # -- rate limit ------------------------------------------------------------
    def admit(self, token: str, family: str) -> tuple[bool, int, int, int]:
        """(admitted, limit, remaining, reset_seconds) for a fixed window."""
        with self.lock:
            now = self.clock()
            span = float(self.config.rate_limit_window_s)
            limit = int(self.config.rate_limit_per_minute)
            win = self.windows.get((token, family))
            if win is None or now - win.start >= span:
                win = self.windows[(token, family)] = _Window(now)
            reset = max(0, math.ceil(win.start + span - now))
            if win.count >= limit:
                self.counters["rate_limited"] = self.counters.get("rate_limited", 0) + 1
                return False, limit, 0, reset
            win.count += 1
            return True, limit, limit - win.count, reset

    # -- credits -----------------------------------------------------------------
    def has(self, amount: int) -> bool:
        with self.lock:
            return self.credits >= amount

    def charge(self, amount: int) -> None:
        with self.lock:
            amount = min(amount, self.credits)
            self.credits -= amount
            self.spent += amount

    def take_slow(self, kind: str) -> bool:
        with self.lock:
            if self.slow[kind] > 0:
                self.slow[kind] -= 1
                return True
            return False

    def daily_verify_ok(self) -> bool:
        """Counts one verification against the daily limit; False = 1017."""
        with self.lock:
            now = self.clock()
            if now - self.day_start >= float(self.config.day_seconds):
                self.day_start, self.daily_verify_count = now, 0
            limit = self.config.daily_verify_limit
            if limit is not None and self.daily_verify_count >= int(limit):
                return False
            self.daily_verify_count += 1
            return True

    def reset_daily_date(self) -> str:
        with self.lock:
            left = float(self.config.day_seconds) - (self.clock() - self.day_start)
        when = datetime.now(UTC) + timedelta(seconds=max(0.0, left))
        return when.strftime("%Y-%m-%dT%H:%M:%S.000Z")

    def usage(self) -> dict:
        with self.lock:
            return {
                "available_credits": self.credits,
                "credits_spent": self.spent,
                "requests": sum(self.calls.values()),
                "rejected_401": 0, "rejected_402": 0, "rate_limited": 0, "timeouts_524": 0,
                **self.counters,
                "daily_verify_count": self.daily_verify_count,
                "calls": dict(self.calls),
                "slow": dict(self.slow),
                "queued_searches": len(self.queue),
            }


# -- envelopes -------------------------------------------------------------------

def flatten(obj: dict, prefix: str = "") -> dict:
    """INFERRED flattening (docs/clearout.md#flat-responses): nested objects joined with "_"; arrays kept."""
    out = {}
    for k, v in obj.items():
        name = f"{prefix}_{k}" if prefix else k
        if isinstance(v, dict) and v:
            out.update(flatten(v, name))
        else:
            out[name] = v
    return out


def success(data, status: int = 200):
    if request.args.get("response") == "flat" and isinstance(data, dict):
        data = flatten(data)
    resp = jsonify({"status": "success", "data": data})
    resp.status_code = status
    return resp


def failed(http: int, message: str, code: int | None = None, additional_info: dict | None = None):
    error: dict = {}
    if code is not None:
        error["code"] = code
    error["message"] = message
    if additional_info is not None:
        error["additional_info"] = additional_info
    resp = jsonify({"status": "failed", "error": error})
    resp.status_code = http
    return resp


def validation_failed(field_name: str, message: str, kind: str, location: str = "body"):
    resp = jsonify({"status": "failed", "error": {"message": "validation failed", "reasons": [
        {"field": [field_name], "location": location, "messages": [message], "types": [kind]}]}})
    resp.status_code = 400
    return resp


def out_of_credits(state: ClearoutSimState):
    """402 / 1002, counted as a rejection."""
    state.bump("rejected_402")
    return failed(402, "You have run out of credits", E_NO_CREDITS)


def verification_refused(state: ClearoutSimState, cost: int):
    """The refusal of a billable check, or None: 402 / 1002 when the balance
    cannot pay `cost`, else 200 / 1017 past the daily verify limit (a check
    let through counts against it)."""
    if not state.has(cost):
        return out_of_credits(state)
    if not state.daily_verify_ok():
        return failed(200, "daily verify limit reached, retry tomorrow", E_DAILY_LIMIT)
    return None


def verification_timed_out(email: str):
    """524: the check would outlast the request's timeout."""
    g.sandbox_extra["outcome"] = "timeout"
    return failed(524, "Timeout Occurred", additional_info={"resource_name": "email", "resource_value": email})


def parse_token(header: str | None) -> str:
    """docs/clearout.md#authentication: `Bearer <t>`, `Bearer:<t>` or the bare token."""
    value = (header or "").strip()
    m = re.match(r"^bearer[ :]\s*(.*)$", value, re.IGNORECASE)
    return (m.group(1) if m else value).strip()


# -- verdicts ------------------------------------------------------------------------

def _verify_data(email: str, sub: int, safe: str, time_taken: int, **overrides) -> dict:
    desc, status, bounce = SUB_STATUS[sub]
    local, _, domain = email.rpartition("@")
    data: dict[str, Any] = {
        "email_address": email,
        "safe_to_send": safe,
        "status": status,
        "verified_on": _now_iso(),
        "time_taken": time_taken,
        "sub_status": {"code": sub, "desc": desc},
        "detail_info": {"account": local, "domain": domain},
        "disposable": "no",
        "free": "no",
        "role": "no",
        "gibberish": "no",
        "suggested_email_address": "",
        "profile": None,
        "bounce_type": bounce,
        "blacklist_info": [],
    }
    for k, v in overrides.items():
        if k in ("mx_record", "smtp_provider"):
            if v:
                data["detail_info"][k] = v
        else:
            data[k] = v
    return data


def test_address_result(email: str, time_taken: int) -> dict | None:
    local, _, domain = email.strip().lower().rpartition("@")
    if domain != TEST_DOMAIN:
        return None
    local = TEST_ALIASES.get(local, local)
    spec = TEST_ADDRESSES.get(local)
    if spec is None:
        return None
    sub, safe, extra = spec
    # docs/clearout.md#test-addresses: bounce_type is "" on every row that does not state one.
    return _verify_data(email.strip(), sub, safe, time_taken, **{"bounce_type": "", **extra})


def dataset_result(dataset: Dataset, email: str, time_taken: int) -> dict:
    """A verdict for any other address, from the dataset (the mapping of
    docs/clearout.md#sub-statuses):
    Deliverable -> valid/200, catch-all -> catch_all/411, Undeliverable ->
    invalid/406 at a dataset domain, invalid/403 at an unknown domain; bad
    syntax -> invalid/400."""
    addr = email.strip()
    if not _EMAIL_SYNTAX.match(addr):
        return _verify_data(addr, 400, "no", time_taken)
    local, _, domain = addr.lower().rpartition("@")
    flags = {}
    if domain in FREE_PROVIDERS:
        flags["free"] = "yes"
    if domain in DISPOSABLE_DOMAINS:
        flags["disposable"] = "yes"
    if local in ROLE_LOCALS:
        flags["role"] = "yes"
    company = dataset.company_by_domain(domain)
    mx = {"mx_record": f"mx1.{domain}", "smtp_provider": ["gsuite", "office365", "other"][_h(domain) % 3]}
    verdict = dataset.verdict_for_email(addr)
    if verdict == VERDICT_DELIVERABLE:
        sub, safe = 200, "yes"
    elif verdict == VERDICT_CATCH_ALL:
        sub, safe = 411, "risky"
    elif company is not None:
        sub, safe = 406, "no"
    elif domain in FREE_PROVIDERS or domain in DISPOSABLE_DOMAINS:
        sub, safe = 200, "yes"  # INFERRED: webmail mailboxes are taken to exist
        if "disposable" in flags:
            safe = "no"
    else:
        sub, safe = 403, "no"
        mx = {}
    if sub == 200 and (flags.get("role") == "yes") and safe == "yes":
        safe = "risky"
    return _verify_data(addr, sub, safe, time_taken, **flags, **mx)


def finder_result(dataset: Dataset, name: str, domain: str) -> tuple[dict | None, int]:
    """(data, cost) or (None, 0) when nothing is found.  Clearout knows
    everyone in the dataset (also people Clodura does not), but never
    returns an address known to bounce."""
    company = dataset.company_by_domain(domain) or dataset.company_by_name(domain)
    if company is None:
        return None, 0
    parts = name.split()
    first, last = parts[0], (parts[-1] if len(parts) > 1 else None)
    person: Person | None = None
    for p in dataset.people_at(company.organisation_id):
        if p.first_name.lower() == first.lower() and (last is None or p.last_name.lower() == last.lower()):
            person = p
            break
    if person is None or person.email_verdict == VERDICT_UNDELIVERABLE:
        return None, 0
    score = (85 + _h("score", person.person_id) % 15) if person.email_verdict == VERDICT_DELIVERABLE \
        else (55 + _h("score", person.person_id) % 20)
    if last is None:
        score = max(10, score - 25)
    data = {
        "emails": [{"email_address": person.email, "role": "no", "business": "yes"}],
        "first_name": person.first_name.lower(),
        "last_name": person.last_name.lower(),
        "full_name": f"{person.first_name} {person.last_name}".lower(),
        "domain": company.domain,
        "confidence_score": score,
        "total": 1,
        "company": {"name": company.name.lower()},
        "found_on": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    return data, COST_FINDER


# -- the app ---------------------------------------------------------------------------

def _family(path: str) -> str:
    if path.startswith((PREFIX + "/email_verify/", PREFIX + "/email/verify/")):
        return "verify"
    if path.startswith(PREFIX + "/email_finder/"):
        return "finder"
    return "other"


def create_clearout_app(config: ClearoutSimConfig | None = None, dataset: Dataset | None = None) -> Flask:
    from . import clearout_bulk as bulk  # it builds on this module's helpers

    config = config or ClearoutSimConfig()
    dataset = dataset or build_dataset()
    app = Flask("clearout_sim")
    recorder = SandboxRecorder("clearout")
    install_recorder(app, recorder)
    state = ClearoutSimState(config, dataset)
    app.extensions["clearout_sim"] = state
    app.extensions["clearout_recorder"] = recorder
    lists = bulk.BulkLists(state, dataset)  # the bulk endpoints: crm_enrich/sandbox/clearout_bulk.py

    @app.before_request
    def _gate():
        g.clearout_rate = None
        if request.path.startswith(("/_sandbox", bulk.RESULTS_PATH)):
            return None  # the control API; result files (pre-signed links, no token)
        rule = request.url_rule.rule if request.url_rule is not None else request.path
        endpoint = rule.removeprefix(PREFIX + "/").removeprefix("/")
        g.sandbox_extra["endpoint"] = endpoint
        g.sandbox_extra["credits"] = 0
        token = parse_token(request.headers.get("Authorization"))
        with state.lock:
            known = token in state.config.api_tokens
        # The public endpoints (company autocomplete) take a token but need none.
        public = request.path in PUBLIC_PATHS
        if (not token or not known) and not public:
            state.bump("rejected_401")
            return failed(401, "API token is not valid; create a new one", E_TOKEN)
        caller = token if token and known else f"public:{request.remote_addr}"
        g.clearout_token = caller
        family = _family(request.path)
        ok, limit, remaining, reset = state.admit(caller, family)
        g.clearout_rate = (limit, remaining, reset)
        if not ok:
            retry_at = datetime.now(UTC) + timedelta(seconds=reset)
            return failed(429, f"rate limit reached, retry after {retry_at.strftime('%Y-%m-%dT%H:%M:%SZ')}",
                          E_RATE_LIMIT)
        with state.lock:
            state.calls[endpoint] = state.calls.get(endpoint, 0) + 1
        if request.method == "POST" and not request.is_json and request.path not in bulk.UPLOAD_PATHS:
            return failed(415, "content type must be application/json")
        return None

    @app.after_request
    def _rate_headers(resp):
        rate = g.get("clearout_rate")
        if rate is not None:
            limit, remaining, reset = rate
            resp.headers["x-ratelimit-limit"] = str(limit)
            resp.headers["x-ratelimit-remaining"] = str(remaining)
            resp.headers["x-ratelimit-reset"] = str(reset)
        if resp.status_code == 524:
            state.bump("timeouts_524")
        return resp

    def json_body() -> dict:
        body = request.get_json(silent=True)
        return body if isinstance(body, dict) else {}

    def check_string(body: dict, name: str, location: str = "body"):
        value = body.get(name)
        if value is None:
            return validation_failed(name, f'"{name}" is required', "any.required", location)
        if not isinstance(value, str):
            return validation_failed(name, f'"{name}" must be a string', "string.base", location)
        if not value.strip():
            return validation_failed(name, f'"{name}" is not allowed to be empty', "any.empty", location)
        return None

    def check_timeout(body: dict, default: int, maximum: int):
        value = body.get("timeout", default)
        if isinstance(value, bool) or not isinstance(value, int):
            return None, validation_failed("timeout", '"timeout" must be an integer', "number.base")
        if value < 0:
            return None, validation_failed("timeout", '"timeout" must be greater than or equal to 0', "number.min")
        if value > maximum:
            return None, validation_failed("timeout", f'"timeout" must be less than or equal to {maximum}',
                                           "number.max")
        return value, None

    # -- instant verify (docs/clearout.md#instant-verify) ----------------------------
    @app.post(PREFIX + "/email_verify/instant")
    def verify_instant():
        body = json_body()
        problem = check_string(body, "email")
        if problem:
            return problem
        timeout, problem = check_timeout(body, VERIFY_TIMEOUT_DEFAULT, VERIFY_TIMEOUT_MAX)
        if problem:
            return problem
        email = body["email"].strip()
        time_taken = 200 + _h("verify-time", email.lower()) % 1200
        test = test_address_result(email, time_taken)
        refusal = verification_refused(state, COST_VERIFY) if test is None else None
        if refusal:
            return refusal
        if state.take_slow("verify") or time_taken > timeout:
            return verification_timed_out(email)
        data = test if test is not None else dataset_result(dataset, email, time_taken)
        cost = 0 if test is not None or data["status"] == "unknown" else COST_VERIFY
        if cost:
            state.charge(cost)
        g.sandbox_extra["credits"] = cost
        g.sandbox_extra["outcome"] = data["status"]
        return success(data)

    # -- credits (docs/clearout.md#balance) --------------------------------------------
    @app.get(PREFIX + "/email_verify/getcredits")
    def getcredits():
        with state.lock:
            available = state.credits
            limit = state.config.daily_verify_limit
            left = None if limit is None else str(max(0, int(limit) - state.daily_verify_count))
        return success({
            "available_credits": available,
            "credits": {
                "available": available,
                "subs": None,
                "available_daily_verify_limit": left,
                "reset_daily_verify_limit_date": state.reset_daily_date(),
                "total": available,
            },
            "low_credit_balance_min_threshold": LOW_CREDIT_THRESHOLD,
        })

    # -- instant finder (docs/clearout.md#instant-finder) ---------------------------------
    def find(name: str, domain: str) -> tuple[dict | None, int]:
        return finder_result(dataset, name, domain)

    @app.post(PREFIX + "/email_finder/instant")
    def finder_instant():
        body = json_body()
        for name in ("name", "domain"):
            problem = check_string(body, name)
            if problem:
                return problem
        timeout, problem = check_timeout(body, FINDER_TIMEOUT_DEFAULT, FINDER_TIMEOUT_MAX)
        if problem:
            return problem
        queue = body.get("queue", True)
        if not isinstance(queue, bool):
            return validation_failed("queue", '"queue" must be a boolean', "boolean.base")
        name, domain = " ".join(body["name"].split()), body["domain"].strip()
        if not _NAME_OK.match(name):
            return failed(200, "name contains unsupported characters", E_NAME_CHARS)
        if not state.has(COST_FINDER):
            state.bump("rejected_402")
            return failed(402, "not enough credits for instant email finder", E_FINDER_CREDITS)
        key = f"{name.lower()}|{domain.lower()}"
        slow = (_h("finder-slow", key) % 1000) < float(state.config.finder_slow_share) * 1000
        duration = (35_000 + _h("finder-time", key) % 25_000) if slow else (1_000 + _h("finder-time", key) % 4_000)
        if state.take_slow("finder") or duration > timeout:
            info = {"resource_name": "email_finder", "resource_value": ""}
            if queue:
                qid = secrets.token_hex(12)
                with state.lock:
                    state.queue[qid] = _QueuedSearch(qid, state.clock() + float(state.config.finder_queue_delay_s),
                                                     find(name, domain))
                info["queue_id"] = qid
                g.sandbox_extra["outcome"] = "queued"
            else:
                g.sandbox_extra["outcome"] = "timeout"
            return failed(524, "Timeout Occurred", additional_info=info)
        data, cost = find(name, domain)
        if data is None:
            g.sandbox_extra["outcome"] = "not_found"
            return failed(200, "email address not found", E_NOT_FOUND)
        state.charge(cost)
        g.sandbox_extra["credits"] = cost
        g.sandbox_extra["outcome"] = "found"
        return success(data)

    # -- queue status (docs/clearout.md#finder-queue) -------------------------------------
    @app.get(PREFIX + "/email_finder/instant/queue_status")
    def finder_queue_status():
        problem = check_string(request.args.to_dict(), "qid", "query")
        if problem:
            return problem
        qid = request.args["qid"].strip()
        with state.lock:
            job = state.queue.get(qid)
            if job is None:
                return failed(200, "invalid queue id", E_QUEUE_ID)
            if state.clock() < job.ready_at:
                return success({"query_status": "in_progress"})
            data, cost = job.result
            charge_now = not job.charged and cost > 0
            job.charged = True
        # INFERRED: a queued search is charged when its result is first read.
        if charge_now:
            state.charge(cost)
            g.sandbox_extra["credits"] = cost
        if data is None:
            return failed(200, "email address not found", E_NOT_FOUND)
        return success({"query_status": "completed", **data})

    autocomplete = install_autocomplete(app, dataset, success, failed, validation_failed)
    # Reverse lookups and single-attribute checks (docs/clearout.md#reverse-lookup,
    # docs/clearout.md#attribute-checks) live in their own module.
    from .clearout_lookup import install_lookups
    install_lookups(app, state, dataset)
    bulk.install(app, lists)

    @app.errorhandler(404)
    def _not_found(_e):
        return failed(404, "resource not found")

    @app.errorhandler(405)
    def _not_allowed(_e):
        return failed(405, "method not allowed")

    # -- control API ------------------------------------------------------------------------
    def config_body() -> dict:
        with state.lock:
            c = state.config
            return {
                "api_tokens": list(c.api_tokens),
                "rate_limit_per_minute": c.rate_limit_per_minute,
                "rate_limit_window_s": c.rate_limit_window_s,
                "daily_verify_limit": c.daily_verify_limit,
                "day_seconds": c.day_seconds,
                "finder_queue_delay_s": c.finder_queue_delay_s,
                "finder_slow_share": c.finder_slow_share,
                "credits": state.credits,
                **lists.config(),
            }

    @app.get("/_sandbox/clearout/usage")
    def control_usage():
        return jsonify(state.usage())

    @app.get("/_sandbox/clearout/config")
    def control_get_config():
        return jsonify(config_body())

    @app.post("/_sandbox/clearout/config")
    def control_config():
        spec = request.get_json(silent=True) or {}
        converters = {
            "rate_limit_per_minute": int,
            "rate_limit_window_s": float,
            "daily_verify_limit": lambda v: None if v is None else int(v),
            "day_seconds": float,
            "finder_queue_delay_s": float,
            "finder_slow_share": float,
            "api_tokens": lambda v: [str(t) for t in v],
        }
        try:
            changes = {k: conv(spec[k]) for k, conv in converters.items() if k in spec}
            credits = int(spec["credits"]) if "credits" in spec else None
            lists.configure(spec)
        except (TypeError, ValueError):
            return failed(400, "bad config value")
        with state.lock:
            for k, v in changes.items():
                setattr(state.config, k, v)
            if "rate_limit_per_minute" in changes or "rate_limit_window_s" in changes:
                state.windows.clear()
            if credits is not None:
                state.credits = credits
        return jsonify(config_body())

    @app.post("/_sandbox/clearout/slow")
    def control_slow():
        spec = request.get_json(silent=True) or {}
        kind = spec.get("kind", "verify")
        if kind not in ("verify", "finder"):
            return failed(400, 'kind must be "verify" or "finder"')
        try:
            times = int(spec.get("times", 1))
        except (TypeError, ValueError):
            return failed(400, "times must be an integer")
        with state.lock:
            state.slow[kind] = max(0, times)
            return jsonify(dict(state.slow))

    @app.post("/_sandbox/clearout/reset")
    def control_reset():
        state.reset()
        autocomplete.reset()
        lists.reset()
        recorder.reset()
        return "", 204

    return app
