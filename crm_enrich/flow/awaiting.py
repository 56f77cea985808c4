"""Steps whose result Clodura sends later (reveals, 202 verifications).

A job asks, notes what it asked and when (`pending:<step>` on the job), and
parks; the callback receiver or the sweeper below stores the result
(`result:<step>`) and queues the job again. No worker ever waits for one.

The note is written before the request goes out, so a task replayed after
its worker died mid-request does not pay twice: it sees the note and
waits. A note without a provider id (the worker died before the answer)
is marked for a resend by the sweeper after VERIFY_POLL_AFTER_S; the note
keeps the first request's time and the number of requests, and the step
gives up VERIFY_GIVE_UP_AFTER_S after the first request, id or not.

Polls are spaced per job (VERIFY_POLL_AFTER_S, then twice as long each
time, at most MAX_POLLS_PER_STEP) and share a small part of the provider's
rate limit (POLL_SHARE of its minute window), so jobs whose callbacks cannot
reach us never use up the day's quota.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crm_enrich import counters, keys
from crm_enrich.jobs.state import State
from crm_enrich.jobs.store import Job, JobMemory, JobStore
from crm_enrich.logs import log
from crm_enrich.providers.errors import DailyQuotaExceeded, ProviderError
from crm_enrich.providers.rate_limit import RateLimited, SharedRateLimiter

from . import callbacks
from .services import Services

# Which steps a parked job may be waiting for.
AWAITING = {
    State.AWAITING_EMAIL: ("reveal_email",),
    State.AWAITING_PHONE: ("reveal_phone",),
    State.AWAITING_VERIFICATION: ("verify", "verify_deep"),
}
MAX_POLLS_PER_STEP = 6
POLL_SHARE = 0.1


@dataclass
class Ticket:
    """What the provider answered at once: its job id and, when it had the
    answer straight away (a 200 verification), the result itself."""
    provider_id: str | None
    result: dict | None = None


def await_result(svc: Services, job: Job, memory: JobMemory, step: str,
                 send: Callable[[str], Ticket]) -> dict | None:
    """The step's final result, or None while it is on its way. `send`
    makes the request, given the callback URL for this job and step."""
    store = svc.store
    result = memory.get(callbacks.result_field(step))
    if result is not None:
        return result
    earlier = memory.get(callbacks.pending_field(step))
    if earlier is not None and not earlier.get("resend"):
        return None
    now = time.time()
    pending: dict[str, Any] = {"sent_at": now, "id": None,
                               "first_sent_at": (earlier or {}).get("first_sent_at", now),
                               "requests": (earlier or {}).get("requests", 0) + 1}
    store.save_provider_data(job.id, callbacks.pending_field(step), pending)
    try:
        ticket = send(callbacks.callback_url(svc.settings, job.id, step))
    except BaseException:
        if earlier is None:
            memory.forget(callbacks.pending_field(step))
        else:
            memory.keep(callbacks.pending_field(step), {**earlier, "requests": pending["requests"]})
        raise
    if ticket.result is not None:
        callbacks.store_result(store.r, job.id, step, ticket.result)
        memory.values[callbacks.result_field(step)] = ticket.result
        return ticket.result
    pending["id"] = ticket.provider_id
    memory.keep(callbacks.pending_field(step), pending)
    log.info("async.requested", job_id=job.id, record_id=job.record_id, step=step)
    return None


def gave_up_result(step: str, provider_id: str | None, waited_s: int) -> dict:
    reason = f"no result from Clodura within {waited_s} s"
    if step.startswith("verify"):
        return {"docId": provider_id, "status": "Completed", "result": "Unknown", "reason": reason}
    return {"trackingId": provider_id, "status": "failed", "reason": reason}


def _poll(svc: Services, step: str, provider_id: str) -> dict:
    if step.startswith("verify"):
        return svc.clodura.verification_status(provider_id)
    return svc.clodura.reveal_status(provider_id)


def sweep_awaiting(svc: Services, resume_job: Callable[[str], None], now: float | None = None) -> int:
    """Move on every parked job that can move: a result stored but not yet
    acted on, a callback overdue (poll, when its turn has come), or a
    deadline passed (give up)."""
    store = svc.store
    now = now or time.time()
    polls = _PollBudget(poll_limiter(svc))
    resumed = 0
    for state, steps in AWAITING.items():
        for job_id in store.ids_in_state(state):
            job = store.get(job_id)
            if job is None or job.state != state:
                continue
            if _next_move(svc, store, job, store.provider_data(job_id), steps, now, polls):
                resume_job(job_id)
                resumed += 1
    if resumed:
        log.info("sweeper.async_resumed", jobs=resumed)
    return resumed


def poll_limiter(svc: Services) -> SharedRateLimiter:
    """Polls' own share of the provider's minute window (they also pass
    through the provider's limiter, like any call)."""
    per_minute = [n * 60 // window for n, window in svc.settings.clodura_limits if window <= 60]
    share = max(1, int(min(per_minute or [10]) * POLL_SHARE))
    return SharedRateLimiter(svc.store.r, keys.clodura_poll_limiter(svc.settings.clodura_api_key), [(share, 60)])


@dataclass
class _PollBudget:
    """Polls share the provider's rate limit with real work: a small share."""
    limiter: SharedRateLimiter
    stopped: bool = False

    def take(self) -> bool:
        if not self.stopped and self.limiter.try_acquire() != 0:
            self.stopped = True
        return not self.stopped


def next_poll_at(pending: dict, poll_after_s: float) -> float:
    """Polls come at poll_after, then 2x, 4x ... after the request."""
    return pending["sent_at"] + poll_after_s * 2 ** pending.get("polls", 0)


def _next_move(svc: Services, store: JobStore, job: Job, data: dict, steps: tuple[str, ...],
               now: float, polls: _PollBudget) -> bool:
    """True when the job should run again now: nothing of its state is
    still on its way (a result waits to be used), or we just got it."""
    settings = svc.settings
    outstanding = [step for step in steps if data.get(callbacks.pending_field(step)) is not None
                   and data.get(callbacks.result_field(step)) is None]
    for step in outstanding:
        pending = data[callbacks.pending_field(step)]
        age = now - pending["sent_at"]
        if now - pending.get("first_sent_at", pending["sent_at"]) >= settings.verify_give_up_after_s:
            callbacks.store_result(store.r, job.id, step,
                                   gave_up_result(step, pending["id"], settings.verify_give_up_after_s))
            counters.incr(store.r, "async_results", step=step, outcome="gave_up")
            log.warning("async.gave_up", job_id=job.id, record_id=job.record_id, step=step,
                        requests=pending.get("requests", 1))
            return True
        if pending.get("id") is None:
            if age >= settings.verify_poll_after_s and not pending.get("resend"):
                # The request's fate is unknown (its worker died): ask again,
                # keeping the first request's time and the count.
                store.save_provider_data(job.id, callbacks.pending_field(step), {**pending, "resend": True})
                return True
            continue
        if (settings.clodura_polling and pending.get("polls", 0) < MAX_POLLS_PER_STEP
                and now >= next_poll_at(pending, settings.verify_poll_after_s) and polls.take()):
            store.save_provider_data(job.id, callbacks.pending_field(step),
                                     {**pending, "polls": pending.get("polls", 0) + 1})
            try:
                body = _poll(svc, step, pending["id"])
            except DailyQuotaExceeded as exc:
                svc.quota.quota_exhausted(exc.retry_after)  # nobody calls until the reset
                polls.stopped = True
                log.warning("async.poll_quota_exhausted", job_id=job.id, step=step)
                continue
            except (ProviderError, RateLimited) as exc:
                log.info("async.poll_failed", job_id=job.id, step=step, error=str(exc))
                continue
            if callbacks.is_final(step, body):
                if callbacks.store_result(store.r, job.id, step, body):
                    counters.incr(store.r, "async_results", step=step, outcome="poll")
                return True
    return not outstanding
