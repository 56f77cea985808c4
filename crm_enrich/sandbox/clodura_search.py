"""Clodura's people search, for the simulator (docs/clodura.md#people-search).

    POST /api/v1/search/people

After the gate every /api/v1 call passes (key 401, rate limits 429/409):

- 400 when `page` (1-100) or `perPage` (1-100) is missing or out of range,
  a filter has the wrong type, `companyDomain` lists more than 10 domains,
  or `linkedinUrl` is a Sales Navigator URL.
- Filters, all optional and combined: `personId`, `firstName`, `lastName`
  (case-insensitive), `linkedinUrl`, `organisationId[]`,
  `organisationName[]` (matched without case, punctuation or legal form:
  looser than enrich's exact name, which is why a search can find someone
  enrich did not), `companyDomain[]`. `seniority`, `personTitle`,
  `functional` and the location filters are accepted and not applied.
- Only people Clodura knows are found; the answer never holds an email or
  a phone.
- 1 credit per record returned (402 when the balance cannot pay for the
  page); nothing found costs nothing and answers 404 "No Results found"
  (Inferred; `POST /_sandbox/clodura/people-search {"empty_status": 200}`
  answers 200 with `people: []` instead).
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable

from flask import Flask, g, jsonify, request

from .dataset import Dataset, Person, normalize_linkedin

COST_PER_RECORD = 1
MAX_DOMAINS = 10
_LEGAL = {"inc", "llc", "ltd", "co", "corp", "group", "gmbh", "plc", "limited", "corporation"}


def loose_name(name: str) -> str:
    words = re.sub(r"[^a-z0-9]+", " ", name.lower()).split()
    while len(words) > 1 and words[-1] in _LEGAL:
        words.pop()
    return " ".join(words)


def _bare_domain(value: str) -> str:
    text = re.sub(r"^[a-z]+://", "", value.strip().lower())
    return text.removeprefix("www.").split("/", 1)[0]


def _strings(body: dict, name: str) -> tuple[list[str] | None, str | None]:
    value = body.get(name)
    if value is None:
        return None, None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None, f"{name} must be an array of strings"
    return [v for v in value if v.strip()] or None, None


def search_payload(dataset: Dataset, p: Person) -> dict:
    company = dataset.company(p.organisation_id)
    assert company is not None
    return {
        "personId": p.person_id, "firstName": p.first_name, "lastName": p.last_name,
        "personTitle": p.title, "seniority": [p.seniority], "functional": [p.department],
        "linkedinUrl": p.linkedin_url, "personCity": company.city, "personState": company.state,
        "personCountry": company.country, "organisationId": company.organisation_id,
        "organisationName": company.name, "domain": company.domain,
        "contactEmailStatus": "verified" if p.email_verdict == "Deliverable" else "unverified",
    }


def install_people_search(app: Flask, state, dataset: Dataset,
                          refuse: Callable, error: Callable) -> None:
    options = {"empty_status": 404}

    @app.post("/api/v1/search/people")
    def search_people():
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return refuse(400, "Request body must be a JSON object")
        page, per_page = body.get("page"), body.get("perPage")
        if isinstance(page, bool) or not isinstance(page, int) or not 1 <= page <= 100:
            return refuse(400, "page is required: an integer from 1 to 100")
        if isinstance(per_page, bool) or not isinstance(per_page, int) or not 1 <= per_page <= 100:
            return refuse(400, "perPage is required: an integer from 1 to 100")
        single = {}
        for name in ("personId", "firstName", "lastName", "linkedinUrl"):
            value = body.get(name)
            if value is not None and not isinstance(value, str):
                return refuse(400, f"{name} must be a string")
            if value and value.strip():
                single[name] = value.strip()
        if "linkedin.com/sales/" in single.get("linkedinUrl", "").lower():
            return refuse(400, "Sales Navigator URLs are not accepted; use a linkedin.com/in/ profile URL")
        lists = {}
        for name in ("organisationId", "organisationName", "companyDomain"):
            values, problem = _strings(body, name)
            if problem:
                return refuse(400, problem)
            if values:
                lists[name] = values
        if len(lists.get("companyDomain", [])) > MAX_DOMAINS:
            return refuse(400, f"companyDomain takes at most {MAX_DOMAINS} domains")

        found = [p for p in dataset.people if p.known]
        if "personId" in single:
            found = [p for p in found if p.person_id == single["personId"]]
        for name, attr in (("firstName", "first_name"), ("lastName", "last_name")):
            if name in single:
                wanted = " ".join(single[name].split()).lower()
                found = [p for p in found if getattr(p, attr).lower() == wanted]
        if "linkedinUrl" in single:
            wanted = normalize_linkedin(single["linkedinUrl"])
            found = [p for p in found if normalize_linkedin(p.linkedin_url) == wanted]
        if "organisationId" in lists:
            found = [p for p in found if p.organisation_id in set(lists["organisationId"])]
        if "organisationName" in lists:
            names = {loose_name(n) for n in lists["organisationName"]}
            found = [p for p in found if loose_name(dataset.company(p.organisation_id).name) in names]
        if "companyDomain" in lists:
            domains = {_bare_domain(d) for d in lists["companyDomain"]}
            found = [p for p in found if dataset.company(p.organisation_id).domain in domains]

        rows = found[(page - 1) * per_page:page * per_page]
        if not rows:
            g.sandbox_extra["outcome"] = "none"
            if options["empty_status"] == 404:
                return error(404, "No Results found, may be you can tweak the filters.")
        cost = COST_PER_RECORD * len(rows)
        if not state.try_charge(g.clodura_key, cost):
            return error(402, "Insufficient credits")
        g.sandbox_extra["credits"] = cost
        if rows:
            g.sandbox_extra["outcome"] = "person"
        return jsonify({
            "pagination": {"page": page, "perPage": per_page, "totalRecords": len(found),
                           "totalPages": max(1, math.ceil(len(found) / per_page))},
            "people": [search_payload(dataset, p) for p in rows],
        })

    @app.post("/_sandbox/clodura/people-search")
    def control_people_search():
        spec = request.get_json(silent=True) or {}
        if spec.get("empty_status") not in (200, 404):
            return error(400, "empty_status must be 200 or 404")
        options["empty_status"] = spec["empty_status"]
        return jsonify(options)
