"""Clearout's company autocomplete in the simulator
(docs/clearout.md#company-autocomplete).

    GET /public/companies/autocomplete?query=<name, domain or website>
    GET /v2/public/companies/autocomplete?query=...   (the same; INFERRED second path)

Public: a token is accepted but not required (the gate in clearout.py lets
these paths through without one; an anonymous caller's rate-limit window is
its address's). Free: no credit is charged. Rate-limited like every other
endpoint (429 / 1030, in the "other" family), and a daily limit
(`daily_limit`, off unless set) answered as a 200 failed envelope
(INFERRED code 1017).

Matching is near-exact against the dataset's companies, as integrators
observe of the real one: a domain or website finds its company (99); a name
equal to a company's, ignoring case, punctuation and a legal form ("Inc",
"LLC", ...), scores 90-99; a name that is only the start of companies'
names ("Northwind" for "Northwind Analytics" and "Northwind Health")
suggests each of them at 35-74, never a confident answer. Best first, at
most five.

Control: POST /_sandbox/clearout/autocomplete {"daily_limit": n | null}
sets the limit (and starts a new day); GET answers {"requests", "today",
"daily_limit"}; POST /_sandbox/clearout/reset resets it with the rest.
"""
from __future__ import annotations

import hashlib
import re
import threading
import time

from flask import Flask, g, jsonify, request

from .dataset import Company, Dataset

PATHS = ("/public/companies/autocomplete", "/v2/public/companies/autocomplete")
E_DAILY_LIMIT = 1017   # INFERRED: the docs name a daily limit, not its code
MAX_SUGGESTIONS = 5
_LEGAL_FORMS = {"inc", "incorporated", "llc", "ltd", "limited", "corp", "corporation", "co", "company", "plc",
                "group", "gmbh", "ag", "sa", "bv", "nv", "llp", "lp", "pty"}


def _h(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big")


def name_key(name: str) -> str:
    words = re.sub(r"[^a-z0-9]+", " ", name.lower().replace("&", " and ")).split()
    while len(words) > 1 and words[-1] in _LEGAL_FORMS:
        words.pop()
    return " ".join(words)


def _as_domain(query: str) -> str | None:
    text = query.strip().lower()
    if " " in text or "." not in text:
        return None
    text = re.sub(r"^[a-z][a-z0-9+.-]*://", "", text)
    return re.split(r"[/?#:]", text, maxsplit=1)[0].removeprefix("www.") or None


def _item(company: Company, score: int) -> dict:
    return {"name": company.name, "domain": company.domain, "confidence_score": score,
            "logo_url": f"https://logos.example.test/{company.domain}.png"}


def suggest(dataset: Dataset, query: str) -> list[dict]:
    """The suggestions for `query`, best first."""
    domain = _as_domain(query)
    if domain:
        company = dataset.company_by_domain(domain)
        return [_item(company, 99)] if company else []
    key = name_key(query)
    if not key:
        return []
    found = []
    for company in dataset.companies:
        own = name_key(company.name)
        if own == key:
            found.append(_item(company, 90 + _h("exact", company.organisation_id) % 10))
        elif own.startswith(key + " "):
            found.append(_item(company, 35 + _h("prefix", company.organisation_id, key) % 40))
    found.sort(key=lambda item: (-item["confidence_score"], item["domain"]))
    return found[:MAX_SUGGESTIONS]


class AutocompleteState:
    def __init__(self, day_seconds: float = 86_400.0):
        self.lock = threading.Lock()
        self.day_seconds = day_seconds
        self.daily_limit: int | None = None
        self.requests = 0
        self.today = 0
        self.day_start = time.monotonic()

    def reset(self) -> None:
        with self.lock:
            self.daily_limit, self.requests, self.today, self.day_start = None, 0, 0, time.monotonic()

    def admit_today(self) -> bool:
        with self.lock:
            self.requests += 1
            if time.monotonic() - self.day_start >= self.day_seconds:
                self.day_start, self.today = time.monotonic(), 0
            if self.daily_limit is not None and self.today >= self.daily_limit:
                return False
            self.today += 1
            return True


def install_autocomplete(app: Flask, dataset: Dataset, success, failed, validation_failed) -> AutocompleteState:
    """Add the endpoint and its control route to the Clearout simulator;
    `success`, `failed` and `validation_failed` are its envelopes."""
    state = AutocompleteState()
    app.extensions["clearout_autocomplete"] = state

    def autocomplete():
        query = request.args.get("query")
        if query is None:
            return validation_failed("query", '"query" is required', "any.required", "query")
        if not query.strip():
            return validation_failed("query", '"query" is not allowed to be empty', "any.empty", "query")
        if not state.admit_today():
            return failed(200, "daily limit reached for company autocomplete, retry tomorrow", E_DAILY_LIMIT)
        found = suggest(dataset, query)
        g.sandbox_extra["outcome"] = "found" if found else "none"
        return success(found)

    for path in PATHS:
        app.add_url_rule(path, f"autocomplete_{path}", autocomplete, methods=["GET"])

    @app.route("/_sandbox/clearout/autocomplete", methods=["GET", "POST"])
    def control_autocomplete():
        if request.method == "POST":
            spec = request.get_json(silent=True) or {}
            try:
                limit = spec.get("daily_limit")
                with state.lock:
                    state.daily_limit = None if limit is None else int(limit)
                    state.today, state.day_start = 0, time.monotonic()
            except (TypeError, ValueError):
                return failed(400, "daily_limit must be an integer or null")
        with state.lock:
            return jsonify({"requests": state.requests, "today": state.today, "daily_limit": state.daily_limit})

    return state
