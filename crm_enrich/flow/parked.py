"""Periodic work (Celery beat): resume the jobs that quota, credits or the
budget parked, once they may run again; check Clodura's balance while
credit-spending is paused."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from crm_enrich.jobs.state import JobMoved, State
from crm_enrich.jobs.store import JobStore
from crm_enrich.logs import log
from crm_enrich.providers.clodura import CloduraClient
from crm_enrich.providers.errors import ProviderError
from crm_enrich.providers.quota import Quota
from crm_enrich.queues import BULK_QUEUE, URGENT_QUEUE
from crm_enrich.salesforce.batch_queue import BatchQueue
from crm_enrich.settings import Settings


def resume_parked(store: JobStore, quota: Quota, resume_job: Callable[[str], None],
                  now: float | None = None) -> int:
    """Deferred jobs once the daily quota has reset and their own hold (a
    used-up rate-limit window, a long Retry-After) is over; paused ones once
    spending may go on. A resumed job goes back to `received` (its provider
    answers stay on it, so nothing is paid twice) and is queued again; if it
    cannot be queued, it goes back to its hold for the next sweep."""
    now = now or time.time()
    states = []
    if quota.quota_resets_in() == 0:
        states.append(State.DEFERRED)
    if not quota.paused_reason() and not quota.budget_paused():
        states.append(State.PAUSED)
    resumed = 0
    for state in states:
        for job_id in store.ids_in_state(state):
            until = store.held_until(job_id)
            if until is not None and until > now:
                continue
            job = store.get(job_id)
            if job is None or job.state != state:
                continue
            reason = job.last_error
            try:
                store.transition(job, State.RECEIVED, last_error=None)
            except JobMoved:
                continue  # a task picked it up meanwhile
            try:
                resume_job(job.id)
            except Exception:
                # Not queued: back on hold, due now, so the next sweep tries again.
                with contextlib.suppress(JobMoved):
                    store.transition(job, state, held_until=now, last_error=reason)
                raise
            resumed += 1
    if resumed:
        log.info("sweeper.resumed", jobs=resumed, states=states)
    return resumed


# Where a job waits while it is not parked: the task queues and the batch read.
_WORKING_UNPARKED = (State.RECEIVED, State.ENRICHING, State.VERIFYING)


def queues_idle(store: JobStore, reads: BatchQueue) -> bool:
    """No task and no batched read is waiting: every message published so
    far has been taken, so a job untouched for minutes is in no queue."""
    return not any(store.r.llen(queue) for queue in (URGENT_QUEUE, BULK_QUEUE)) and reads.size() == 0


def revive_stuck(store: JobStore, settings: Settings, resume_job: Callable[[str], None],
                 idle: Callable[[], bool], now: float | None = None) -> int:
    """Jobs left in a working state by a task that stopped without a word
    (its exception, a lost publish, a time limit) are queued again once
    they have been untouched for STUCK_AFTER_S while the queues are idle
    (the job lock makes a second copy harmless); after STUCK_MAX_REVIVALS
    the job fails with its reason. Parked jobs have their own sweepers."""
    now = now or time.time()
    revived = 0
    checked_idle = None
    for state in _WORKING_UNPARKED:
        for job_id in store.ids_in_state(state):
            job = store.get(job_id)
            if job is None or job.state != state or now - job.updated_at < settings.stuck_after_s:
                continue
            if checked_idle is None:
                checked_idle = idle()
            if not checked_idle:
                return revived  # a backlog: its jobs are not stuck, they wait their turn
            if store.count_revival(job_id) > settings.stuck_max_revivals:
                store.finish(job, State.FAILED, f"stuck in {state} after {settings.stuck_max_revivals} "
                                                f"revivals; last error: {job.last_error or 'none'}")
                log.warning("job.stuck_failed", job_id=job_id, state=state)
                continue
            store.touch(job_id)
            resume_job(job_id)
            revived += 1
    if revived:
        log.info("sweeper.revived_stuck", jobs=revived)
    return revived


def check_credits(quota: Quota, clodura: CloduraClient) -> bool | None:
    """While spending is paused for want of credits, ask /credits (free)."""
    if not quota.paused_reason():
        return None
    try:
        remaining = clodura.credits()
    except ProviderError as exc:
        log.warning("credits.check_failed", error=str(exc))
        return None
    available = quota.credits_available(remaining)
    log.info("credits.checked", remaining=remaining, resumed=available)
    return available
