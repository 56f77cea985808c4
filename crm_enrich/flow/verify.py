"""Email verification: which check to run, and one verdict for Salesforce
(`valid`, `invalid`, `risky`, `catch_all`, `unknown`) with the provider's
own words kept beside it.

Clodura answers 200 with the verdict, or 202 and sends it later
(docs/clodura.md#email-verification). Standard checks (0.04 credits) by default;
a deep check (0.1) for an address on a domain known to be catch-all,
so the verdict can be more than "catch-all". Clearout (VERIFY_PROVIDER)
answers at once: alone, or as a second opinion on what Clodura calls
risky or catch-all.
"""
from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime

from crm_enrich import keys
from crm_enrich.jobs.store import Job, JobMemory
from crm_enrich.providers.quota import COSTS

from . import callbacks
from .awaiting import Ticket, await_result
from .clearout_lists import OnList, verdict_on_list
from .services import Services

VERDICTS = ("valid", "invalid", "risky", "catch_all", "unknown")
# What VERIFY_PROVIDER=clodura_then_clearout asks Clearout about.
SECOND_OPINION = {"risky", "catch_all"}

# Clodura's results -> our verdicts.
CLODURA_VERDICTS = {
    "deliverable": "valid",
    "undeliverable": "invalid",
    "risky (catch-all)": "catch_all",
    "catch-all": "catch_all",
    "risky": "risky",
}


def normalise_clodura(result: str | None) -> str:
    return CLODURA_VERDICTS.get((result or "").strip().lower(), "unknown")


def iso_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _catch_all_key(email: str) -> str:
    return keys.catch_all_domain(email.rsplit("@", 1)[-1].strip().lower())


def verify(svc: Services, job: Job, data: JobMemory, email: str, hint: str | None,
           runner_id: str) -> dict | None | OnList:
    """The verification to write, None while a 202 verdict is on its way,
    or ON_LIST while a large run's Clearout bulk list has the address.
    `hint` is what a reveal said of the address (e.g. "catch_all")."""
    provider = svc.settings.verify_provider
    if provider == "clearout":
        return _clearout(svc, job, data, email, runner_id)
    verified = _clodura(svc, job, data, email, hint, runner_id)
    if verified and provider == "clodura_then_clearout" and verified["status"] in SECOND_OPINION:
        second = _clearout(svc, job, data, email, runner_id)
        if isinstance(second, OnList):
            return second
        return {**second, "detail": f"{verified['detail']}; then {second['detail']}"}
    return verified


def _clearout(svc: Services, job: Job, data: JobMemory, email: str, runner_id: str) -> dict | OnList:
    listed = verdict_on_list(svc, job, data, email)  # a large run's bulk list, if it is one
    if isinstance(listed, OnList):
        return listed
    found = listed or svc.cache.fetch(
        "clearout_verify", {"email": email},
        lambda: asdict(svc.clearout_client().verify_email(email, svc.settings.clearout_verify_timeout_ms)),
        owner=runner_id, refresh=job.force).value
    return {"status": found["verdict"], "detail": f"clearout: {found['provider_status']} ({found['detail']})",
            "provider": "clearout", "verified_at": found["verified_at"] or iso_now(),
            "email_type": found.get("email_type")}


def _clodura(svc: Services, job: Job, data: JobMemory, email: str, hint: str | None,
             runner_id: str) -> dict | None:
    mode = svc.settings.clodura_deep_verification
    deep = mode == "always" or (mode == "catch_all" and (
        hint == "catch_all" or bool(svc.store.r.exists(_catch_all_key(email)))))
    body = _clodura_check(svc, job, data, email, deep, runner_id)
    if body is None:
        return None
    verdict = normalise_clodura(body.get("result"))
    if verdict == "catch_all" and not deep and mode == "catch_all":
        # Learnt from Clodura's answer, so kept no longer than its data may be.
        svc.store.r.set(_catch_all_key(email), 1, ex=keys.PROVIDER_DATA_MAX_TTL_S)
        deep = True
        body = _clodura_check(svc, job, data, email, deep, runner_id)
        if body is None:
            return None
        verdict = normalise_clodura(body.get("result"))
    detail = f"clodura {'deep' if deep else 'standard'}: {body.get('result') or 'no result'}"
    if body.get("reason"):
        detail += f" ({body['reason']})"
    return {"status": verdict, "detail": detail, "provider": "clodura",
            "verified_at": body.get("verifiedAt") or iso_now()}


def _clodura_check(svc: Services, job: Job, data: JobMemory, email: str, deep: bool,
                   runner_id: str) -> dict | None:
    step = "verify_deep" if deep else "verify"
    request = {"email": email, "deep": deep}

    def ask(url: str) -> dict:
        # Charged when asked, even when the verdict comes later (202).
        answer = svc.quota.charged(step, job.id, lambda: svc.clodura.verify_email(email, deep, url),
                                   lambda answer: answer.body.get("creditsUsed", COSTS[step]))
        return {"id": callbacks.provider_job_id(answer.body),
                "result": None if answer.accepted_for_later else answer.body}

    def send(url: str) -> Ticket:
        # The same address asked by two jobs at once costs one call.
        answer = svc.cache.fetch("verify", request, lambda: ask(url), keep=lambda v: v["result"] is not None,
                                 owner=runner_id, refresh=job.force)
        return Ticket(answer.value["id"], answer.value["result"])

    came_later = callbacks.result_field(step) in data  # by callback or poll, not in the answer
    body = await_result(svc, job, data, step, send)
    if came_later and body is not None and not body.get("reason"):  # a verdict, not our giving up
        svc.cache.put("verify", request, {"id": callbacks.provider_job_id(body), "result": body})
    return body
