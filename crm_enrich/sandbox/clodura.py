"""Clodura API simulator (contract: /work/shared/contracts/clodura.md).

Pipeline for every `/api/v1/...` request, in the contract's order (§11):

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
                                      "day_seconds": s, "api_keys": {key: plan}}
    POST /_sandbox/clodura/reset     credits, windows, usage, config, log and faults
                                     back to their starting state
"""
from __future__ import annotations

import bisect
import copy
import math
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from flask import Flask, g, jsonify, request

from .common import SandboxRecorder, install_recorder
from .dataset import Company, Dataset, Person, build_dataset

# ---------------------------------------------------------------------------
# INFERRED names (contract §11.8): every response field name that the docs did
# not show lives here, so it can be renamed in one place once real payloads
# are observed.  Keys are our internal names, values the wire names.
# ---------------------------------------------------------------------------
INFERRED_FIELDS: dict[str, str] = {
    # error body (§4.2)
    "error_status": "status",
    "error_message": "message",
    # Enrich Contacts envelope (§8.6)
    "enrich_data": "data",
    "credits_used": "creditsUsed",
    # Enrich Contacts person (§8.6)
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
    # nested organisation (§8.6 / §9.1)
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
    # Verify Email (§8.7) — meanings documented, names INFERRED
    "verify_email": "email",
    "verify_deep": "deepVerification",
    "verify_doc_id": "docId",
    "verify_status": "status",
    "verify_result": "result",
    "verify_at": "verifiedAt",
}
F = INFERRED_FIELDS

# Documented enum values (§8.7).
VERIFY_STATUS_DONE = "Completed"
VERIFY_STATUS_PENDING = "In-progress"
VERIFY_RESULT_PENDING = "Pending"

# Documented request field names (§8.6, §8.7).
ENRICH_IDENTIFIERS = ("linkedinUrl", "email", "firstName", "lastName", "organisationName", "orgLinkedinUrl")

# Credit costs (§3.2).
COST_ENRICH_FULL = 2
COST_ENRICH_ORG_ONLY = 1
COST_VERIFY_STANDARD = 0.04
COST_VERIFY_DEEP = 0.1

# Plans (§3.1, §5).  Plan names compare case-insensitively.
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
PROSPECT_MAX_DIRECT_DIALS = 200  # INFERRED (§3.1)
VERIFY_PLANS = {"free forever", "max", "payg"}  # INFERRED: others -> 403 (§8.7)

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


class CloduraSimState:
    """All mutable simulator state, guarded by one lock."""

    def __init__(self, config: CloduraSimConfig, dataset: Dataset):
        self.initial = copy.deepcopy(config)
        self.dataset = dataset
        self.lock = threading.Lock()
        self.clock = time.monotonic
        self.reset()

    # -- lifecycle -----------------------------------------------------
    def reset(self) -> None:
        with self.lock:
            self.config = copy.deepcopy(self.initial)
            self.accounts: dict[str, _Account] = {}
            self.hits: dict[str, list[float]] = {}
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
                # Documented type quirk: maxContacts is a string (§8.1).
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
        F["verify_at"]: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _error(status: int, message: str, headers: dict | None = None):
    resp = jsonify({F["error_status"]: status, F["error_message"]: message})
    resp.status_code = status
    if headers:
        resp.headers.update(headers)
    return resp


# -- the app ------------------------------------------------------------------

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
        g.sandbox_extra["endpoint"] = request.path.removeprefix("/api/v1/")
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
        return None

    def json_body():
        body = request.get_json(silent=True)
        return body if isinstance(body, dict) else None

    # -- §8.1 GET /credits ---------------------------------------------------
    @app.get("/api/v1/credits")
    def credits():
        return jsonify(state.credits_body(g.clodura_key))

    # -- §8.6 POST /cleanup/enrich ------------------------------------------
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

    # -- §8.7 POST /verify/email ----------------------------------------------
    def decide_verification(email: str, deep: bool) -> str | None:
        """The final verdict if the check finishes synchronously (200), or
        None to queue the job (202 + webhook).  Everything is synchronous for
        now; the 202 path for catch-all domains plugs in here."""
        return dataset.verdict_for_email(email)

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
        deep = body.get("deepVerification", False)
        if deep is None:
            deep = False
        if not isinstance(deep, bool):
            return refuse(400, "deepVerification must be a boolean")
        webhook = body.get("webhookUrl")
        if webhook is not None and not (isinstance(webhook, str) and re.match(r"^https?://", webhook)):
            return refuse(400, "webhookUrl must be an http(s) URL")

        cost = COST_VERIFY_DEEP if deep else COST_VERIFY_STANDARD
        if not state.try_charge(g.clodura_key, cost):
            return _error(402, "Insufficient credits")
        g.sandbox_extra["credits"] = cost
        doc_id = f"vrf_{uuid.uuid4().hex[:8]}"
        verdict = decide_verification(email, deep)
        g.sandbox_extra["outcome"] = verdict
        return jsonify(verification_payload(email, deep, doc_id, VERIFY_STATUS_DONE, verdict))

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
        return jsonify(config_body())

    @app.post("/_sandbox/clodura/reset")
    def control_reset():
        state.reset()
        recorder.reset()
        return "", 204

    return app
