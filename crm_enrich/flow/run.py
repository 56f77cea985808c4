"""Running a job: one owner of its lifecycle.

`process_job` takes the job's lock, advances it as far as it can go now,
and turns whatever a step raised into the job's next state: a wait (the
task runs again later, no retry used), a retry with backoff, a hold for
quota or credits, or a final failure with its reason. The task that calls
it (worker.tasks) only maps RetryLater onto Celery.
"""
from __future__ import annotations

import time

from crm_enrich import keys
from crm_enrich.jobs.state import JobMoved, SkipReason, State
from crm_enrich.jobs.store import Job
from crm_enrich.logs import log
from crm_enrich.providers.breaker import CircuitOpen
from crm_enrich.providers.cache import AnswerPending, job_owner
from crm_enrich.providers.errors import CreditsExhausted, DailyQuotaExceeded, ProviderError
from crm_enrich.providers.quota import QuotaExhausted, SpendingPaused
from crm_enrich.providers.rate_limit import RateLimited, live_work
from crm_enrich.queues import EVENT_SOURCES, RELEASE_LOCK, TASK_TIME_LIMIT_S
from crm_enrich.salesforce.gateway import SalesforceFailure
from crm_enrich.salesforce.ids import PERSON_OBJECTS

from .account import advance_account
from .person import advance_person
from .services import Services

# Longer than any task may run, so a slow task never loses its job's lock.
JOB_LOCK_TTL_MS = (TASK_TIME_LIMIT_S + 60) * 1000

# Take the job's lock if it is free or already ours: a redelivery of the
# same task (its worker died holding the lock) carries the same runner id.
_LOCK = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""


class RetryLater(Exception):
    """The task should run again later: after `countdown` seconds, or (None)
    after the task's own exponential backoff. A `wait` is not a failure
    (a rate-limit slot, another job's identical request, this job's lock)
    and does not use up the task's retries: in a long backlog a job may
    wait for its slot many times."""

    def __init__(self, reason: str, countdown: float | None = None, wait: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.countdown = countdown
        self.wait = wait


def process_job(svc: Services, job_id: str, runner_id: str) -> str:
    """Advance a job as far as it can go now; answer its state."""
    store = svc.store
    lock_key = keys.job_lock(job_id)
    if not store.r.eval(_LOCK, 1, lock_key, runner_id, JOB_LOCK_TTL_MS):
        raise RetryLater("another task is working on this job", 2.0, wait=True)
    try:
        # Provider requests in flight are owned by the job and this task.
        return _process_locked(svc, job_id, job_owner(job_id, runner_id))
    finally:
        store.r.eval(RELEASE_LOCK, 1, lock_key, runner_id)  # only if still ours


def _process_locked(svc: Services, job_id: str, runner_id: str) -> str:
    store = svc.store
    job = store.get(job_id)
    if job is None:
        log.warning("job.missing", job_id=job_id)
        return "missing"
    if job.final or job.state == State.WRITING:
        return job.state  # replayed task, or the batch flush will finish it
    store.count_attempt(job)
    try:
        # New records' calls take the providers' slots before bulk work's.
        with live_work(job.source in EVENT_SOURCES):
            return _advance(svc, job, runner_id)
    except JobMoved as exc:
        # The write flush or the sweeper moved the job while this task
        # worked on a copy: the stored job is the truth, and this task stops.
        log.info("job.moved_meanwhile", job_id=job.id, record_id=job.record_id, detail=str(exc))
        return exc.stored or "missing"
    except RateLimited as exc:
        # Our own limiter said wait: no error recorded. A wait past what the
        # broker can hold (the day's window used up) is a hold until then.
        if exc.wait_s > svc.settings.max_countdown_s:
            hold(svc, job, exc.wait_s, f"rate limit: the limiter's window is used up for {exc.wait_s:.0f} s")
        else:
            raise RetryLater("waiting for a rate-limit slot", exc.wait_s, wait=True) from None
    except AnswerPending as exc:
        if exc.wait_s > svc.settings.max_countdown_s:
            hold(svc, job, exc.wait_s, str(exc))
        else:
            raise RetryLater("the same request is in flight for another job", exc.wait_s, wait=True) from None
    except DailyQuotaExceeded as exc:
        until = svc.quota.quota_exhausted(exc.retry_after)
        store.transition(job, State.DEFERRED, held_until=until, last_error=str(exc))
    except QuotaExhausted as exc:
        store.transition(job, State.DEFERRED, held_until=exc.until, last_error=str(exc))
    except CreditsExhausted as exc:
        svc.quota.credits_exhausted()
        store.transition(job, State.PAUSED, last_error=str(exc))
    except SpendingPaused as exc:
        store.transition(job, State.PAUSED, last_error=str(exc))
    except CircuitOpen as exc:
        # The provider is down for everyone: park until the breaker lets a
        # probe through (the retry deadline still runs).
        _retry_or_fail(svc, job, str(exc), exc.wait_s, hold_anyway=True)
    except ProviderError as exc:
        if not exc.retryable:
            store.finish(job, State.FAILED, str(exc))
        else:
            _retry_or_fail(svc, job, str(exc), exc.retry_after)
    except SalesforceFailure as exc:
        if not exc.retryable:
            store.finish(job, State.FAILED, str(exc))
        else:
            _retry_or_fail(svc, job, str(exc))
    log.info("job.stopped", job_id=job.id, record_id=job.record_id, state=job.state,
             error=job.last_error)
    return job.state


def hold(svc: Services, job: Job, wait_s: float, reason: str) -> None:
    """Park the job as `deferred` for `wait_s`; the sweeper queues it again
    when it is due (a broker may not hold a delayed message that long)."""
    svc.store.transition(job, State.DEFERRED, held_until=time.time() + wait_s, last_error=reason)


def _retry_or_fail(svc: Services, job: Job, reason: str, wait_s: float | None = None,
                   hold_anyway: bool = False) -> None:
    """A passing error: retried (RetryLater, or a hold for a long wait)
    until RETRY_DEADLINE_S after the job first met it, then failed."""
    failing_for = svc.store.note_error(job, reason)
    if failing_for > svc.settings.retry_deadline_s:
        svc.store.finish(job, State.FAILED, f"gave up after {failing_for:.0f} s of retries: {reason}")
    elif wait_s is not None and (hold_anyway or wait_s > svc.settings.max_countdown_s):
        hold(svc, job, wait_s, reason)
    else:
        raise RetryLater(reason, wait_s)


def retry_unexpected(svc: Services, job_id: str, exc: BaseException) -> None:
    """The catch-all for what no step expected (a Redis timeout, a broken
    answer, the soft time limit): retried like a passing error, so the job
    never stops silently; RetryLater, or the job fails past the deadline."""
    reason = f"unexpected {type(exc).__name__}: {exc}"[:300]
    job = svc.store.get(job_id)
    if job is None or job.final or job.state == State.WRITING:
        return
    _retry_or_fail(svc, job, reason)


def give_up(svc: Services, job_id: str, reason: str) -> None:
    """Retries exhausted: park the job as a dead letter, visible for a re-run."""
    job = svc.store.finish_by_id(job_id, State.FAILED, f"gave up after retries: {reason}")
    if job is not None:
        log.warning("job.failed", job_id=job.id, record_id=job.record_id, reason=reason)


def _advance(svc: Services, job: Job, runner_id: str) -> str:
    if job.object == "Account":
        return advance_account(svc, job, runner_id)
    if job.object not in PERSON_OBJECTS:
        svc.store.finish(job, State.SKIPPED, SkipReason.UNSUPPORTED_OBJECT, detail=job.object)
        return job.state
    return advance_person(svc, job, runner_id)
