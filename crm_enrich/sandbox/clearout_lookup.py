"""Clearout's reverse lookups and single-attribute checks, for the simulator
(docs/clearout.md#reverse-lookup, docs/clearout.md#attribute-checks).

    GET  /v2/reverse_lookup/email?email_address=   the person behind an address
    GET  /v2/reverse_lookup/linkedin?url=          the person behind a profile
    POST /v2/email/verify/<attribute>              one yes/no flag about an address

They pass the same gate as every /v2 call (token 401/1000, rate limit
429/1030 with x-ratelimit-* headers; the attribute checks count in the
verify family, the lookups in "other"), then:

- Reverse lookup: 400 (Joi-style, location `query`) for a missing or empty
  parameter; 402/1002 when the balance cannot pay for the cheapest find (2
  credits) or for the answer found. Clearout knows everyone in the dataset,
  also people Clodura does not, but no one behind an address known to
  bounce. A person costs 4 credits, a role address (info@, sales@, ... at a
  dataset company) 2, nothing found (`lead: null`) nothing. Phone numbers
  are never returned (their field name is not documented).
- Attribute checks: 400 for a missing email or a `timeout` outside
  0..110000 (default 90000); 402/1002 without a credit; the daily verify
  limit (200 failed 1017) counts them; the catch-all check answers 524 when
  its simulated duration exceeds the timeout. Inferred price: 1 credit; the
  documented @example.com test addresses are free. `business_account` is
  "yes" unless the address is free or disposable (inferred).
"""
from __future__ import annotations

from flask import Flask, g, request

from .clearout import (
    PREFIX,
    ROLE_LOCALS,
    ClearoutSimState,
    _h,
    _now_iso,
    dataset_result,
    failed,
    out_of_credits,
    success,
    test_address_result,
    validation_failed,
    verification_refused,
    verification_timed_out,
)
from .dataset import VERDICT_UNDELIVERABLE, Dataset, Person

COST_REVERSE_PERSON = 4
COST_REVERSE_ROLE = 2
COST_ATTRIBUTE = 1   # Inferred (docs/clearout.md#attribute-checks)
ATTRIBUTE_TIMEOUT_DEFAULT = 90_000
ATTRIBUTE_TIMEOUT_MAX = 110_000
# endpoint -> the flag its answer carries (the official SDK's names)
ATTRIBUTE_FLAGS = {"catchall": "catchall", "disposable": "disposable", "business": "business_account",
                   "free": "free_account", "role": "role_account", "gibberish": "gibberish"}


def person_lead(dataset: Dataset, p: Person) -> dict:
    company = dataset.company(p.organisation_id)
    assert company is not None
    return {
        "id": f"lead_{p.person_id.removeprefix('p_')}",
        "type": "person",
        "name": f"{p.first_name} {p.last_name}",
        "contructed_title": f"{p.seniority} {p.department}",  # sic: the vendor's spelling
        "title": p.title,
        "profile_picture": f"https://img.example.test/p/{p.person_id}.jpg",
        "linkedin_url": p.linkedin_url,
        "company_name": company.name,
        "company_domain": company.domain,
        "addresses": {"country": company.country, "city": company.city},
        "total_experience_in_months": 12 + _h("experience", p.person_id) % 300,
    }


def lookup_by_email(dataset: Dataset, email: str) -> tuple[dict | None, int]:
    """(lead, cost): a person (4), a role address at a dataset company (2), or nothing."""
    person = dataset.anyone_by_email(email)
    if person is not None and person.email_verdict != VERDICT_UNDELIVERABLE:
        return person_lead(dataset, person), COST_REVERSE_PERSON
    local, _, domain = email.strip().lower().rpartition("@")
    company = dataset.company_by_domain(domain)
    if company is not None and local in ROLE_LOCALS:
        return {"id": f"lead_role_{_h('role', email.lower()) % 10**8:08d}", "type": "role", "name": None,
                "contructed_title": None, "title": None, "profile_picture": None,
                "linkedin_url": company.linkedin_url, "company_name": company.name,
                "company_domain": company.domain,
                "addresses": {"country": company.country, "city": company.city},
                "total_experience_in_months": None}, COST_REVERSE_ROLE
    return None, 0


def attribute_flag(attribute: str, data: dict) -> str:
    """The yes/no answer of one check, from a verify answer's `data`."""
    if attribute == "catchall":
        return "yes" if data["status"] == "catch_all" else "no"
    if attribute == "business":
        return "no" if "yes" in (data["free"], data["disposable"]) else "yes"
    return data[attribute]


def install_lookups(app: Flask, state: ClearoutSimState, dataset: Dataset) -> None:

    def lookup_query(name: str):
        """(the query parameter `name`, None), or (None, the 400 for a
        missing or empty one, or the 402 when the balance cannot pay for the
        cheapest find)."""
        value = request.args.get(name)
        if value is None:
            return None, validation_failed(name, f'"{name}" is required', "any.required", "query")
        if not value.strip():
            return None, validation_failed(name, f'"{name}" is not allowed to be empty', "any.empty", "query")
        if not state.has(COST_REVERSE_ROLE):
            return None, out_of_credits(state)
        return value.strip(), None

    def answer_lookup(lead: dict | None, cost: int, echo: dict):
        if cost and not state.has(cost):
            return out_of_credits(state)
        if cost:
            state.charge(cost)
        g.sandbox_extra["credits"] = cost
        g.sandbox_extra["outcome"] = lead["type"] if lead else "not_found"
        return success({**echo, "lead": lead})

    @app.get(PREFIX + "/reverse_lookup/email")
    def reverse_lookup_email():
        email, problem = lookup_query("email_address")
        if problem:
            return problem
        lead, cost = lookup_by_email(dataset, email)
        return answer_lookup(lead, cost, {"email_address": email})

    @app.get(PREFIX + "/reverse_lookup/linkedin")
    def reverse_lookup_linkedin():
        url, problem = lookup_query("url")
        if problem:
            return problem
        person = dataset.anyone_by_linkedin(url)
        if person is None:
            return answer_lookup(None, 0, {})
        return answer_lookup(person_lead(dataset, person), COST_REVERSE_PERSON, {})

    @app.post(PREFIX + "/email/verify/<attribute>")
    def attribute_check(attribute: str):
        if attribute not in ATTRIBUTE_FLAGS:
            return failed(404, "resource not found")
        body = request.get_json(silent=True)
        body = body if isinstance(body, dict) else {}
        email = body.get("email")
        if email is None:
            return validation_failed("email", '"email" is required', "any.required")
        if not isinstance(email, str) or not email.strip():
            return validation_failed("email", '"email" is not allowed to be empty', "any.empty")
        timeout = body.get("timeout", ATTRIBUTE_TIMEOUT_DEFAULT)
        if isinstance(timeout, bool) or not isinstance(timeout, int):
            return validation_failed("timeout", '"timeout" must be an integer', "number.base")
        if not 0 <= timeout <= ATTRIBUTE_TIMEOUT_MAX:
            return validation_failed("timeout", f'"timeout" must be between 0 and {ATTRIBUTE_TIMEOUT_MAX}',
                                     "number.max")
        email = email.strip()
        time_taken = 150 + _h("attribute-time", attribute, email.lower()) % 900
        test = test_address_result(email, time_taken)
        refusal = verification_refused(state, COST_ATTRIBUTE) if test is None else None
        if refusal:
            return refusal
        if attribute == "catchall" and time_taken > timeout:
            return verification_timed_out(email)
        data = test if test is not None else dataset_result(dataset, email, time_taken)
        cost = 0 if test is not None else COST_ATTRIBUTE
        if cost:
            state.charge(cost)
        flag = attribute_flag(attribute, data)
        g.sandbox_extra["credits"] = cost
        g.sandbox_extra["outcome"] = flag
        return success({"email_address": email, ATTRIBUTE_FLAGS[attribute]: flag, "verified_on": _now_iso(),
                        "time_taken": time_taken})

