"""Periodic work (Celery beat): resume the jobs that quota, credits or the
budget parked, once they may run again; check Clodura's balance while
credit-spending is paused."""
from __future__ import annotations

from collections.abc import Callable

from crm_enrich.jobs.state import JobMoved, State
from crm_enrich.jobs.store import JobStore
from crm_enrich.logs import log
from crm_enrich.providers.clodura import CloduraClient
from crm_enrich.providers.errors import ProviderError
from crm_enrich.providers.quota import Quota


def resume_parked(store: JobStore, quota: Quota, resume_job: Callable[[str], None]) -> int:
    """Deferred jobs once the daily quota has reset, paused ones once
    spending may go on. A resumed job goes back to `received` (its provider
    answers stay on it, so nothing is paid twice) and is queued again."""
    states = []
    if quota.quota_resets_in() == 0:
        states.append(State.DEFERRED)
    if not quota.paused_reason() and not quota.budget_paused():
        states.append(State.PAUSED)
    resumed = 0
    for state in states:
        for job_id in store.ids_in_state(state):
            job = store.get(job_id)
            if job is None or job.state != state:
                continue
            try:
                store.transition(job, State.RECEIVED, last_error=None)
            except JobMoved:
                continue  # a task picked it up meanwhile
            resume_job(job.id)
            resumed += 1
    if resumed:
        log.info("sweeper.resumed", jobs=resumed, states=states)
    return resumed


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
