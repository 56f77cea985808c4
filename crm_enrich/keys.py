"""Every Redis key crm-enrich uses, in one place, with how long it lives.

The store is shared by the web app, every worker and beat, so a key's
spelling is part of the contract between processes: it is written here
once and nowhere else. TTLs sit beside their keys; anything that may hold
provider data or personal data lives at most `PROVIDER_DATA_MAX_TTL_S`
(docs/clodura.md#data-retention).
"""
from __future__ import annotations

from crm_enrich.settings import PROVIDER_DATA_MAX_TTL_S

__all__ = ["PROVIDER_DATA_MAX_TTL_S"]

# -- jobs -----------------------------------------------------------------------
JOB_META_TTL_S = 7 * 86_400        # job bookkeeping: ids, states, times; no provider data
DEDUPE_TTL_S = 2 * 86_400          # Salesforce retries an Outbound Message for up to 24 h
TRACKED_TTL_S = 400 * 86_400       # hashes (never values) of what we last wrote to tracked fields


def job(job_id: str) -> str:
    return f"job:{job_id}"


def job_provider_data(job_id: str) -> str:
    """The provider answers a job gathered (≤ 24 h)."""
    return f"job:{job_id}:provider"


def job_lock(job_id: str) -> str:
    return f"job:{job_id}:lock"


def job_write_partner(job_id: str) -> str:
    """The job (an Account's Contact's) whose write this job's write waits
    for, so that both share one call: an id, no value."""
    return f"job:{job_id}:write_partner"


WRITE_PARTNER_TTL_S = 3600   # a partner only matters while both jobs are on their way


def jobs_in_state(state: str) -> str:
    return f"jobs:state:{state}"


# Held jobs (deferred, paused) by the time their hold ends: the sweeper
# queues each again when it is due. A job leaves it when it leaves the hold.
JOBS_HELD_UNTIL = "jobs:held_until"


def dedupe(event_key: str) -> str:
    return f"dedupe:{event_key}"


def record_last_job(object_type: str, record_id: str) -> str:
    return f"record:{object_type}:{record_id}:last_job"


def tracked(object_type: str, record_id: str) -> str:
    return f"tracked:{object_type}:{record_id}"


def deliveries(task_id: str, retries: int) -> str:
    """How often one attempt of a task was delivered (the poison-message cap)."""
    return f"deliveries:{task_id}:{retries}"


DELIVERIES_TTL_S = 86_400

# Dedupe keys of the ways in (the part after "dedupe:").


def outbound_notification(notification_id: str) -> str:
    return f"om:{notification_id}"


# An Outbound Message's declared field values (emails among them), from the
# web app's ACK to the intake task that puts them on the jobs: 24 h at most,
# after which the jobs read their records instead.
INTAKE_VALUES_TTL_S = 86_400


def intake_values(batch_id: str) -> str:
    return f"intake:values:{batch_id}"


def json_event(event_id: str, record_id: str) -> str:
    return f"event:{event_id}:{record_id}"


def record_created(object_type: str, record_id: str) -> str:
    return f"created:{object_type}:{record_id}"


def cdc_event(replay_id: bytes, record_id: str) -> str:
    """A change event's record (one event may name several records)."""
    return f"cdc:{replay_id.hex()}:{record_id}"


# -- Change Data Capture subscriber (crm_enrich/ingest) ------------------------------
def cdc_replay(topic: str) -> str:
    """The replay id (hex) up to which the topic's events are queued, or
    EARLIEST after Salesforce refused an expired one. No TTL: it is where
    the subscriber resumes, and it holds nothing personal."""
    return f"cdc:replay:{topic}"


CDC_HEARTBEAT = "cdc:heartbeat"   # "<unix time> <host> <streams open>/<topics>", every 15 s from its main loop
CDC_HEARTBEAT_TTL_S = 120


def run_record(run_id: str, record_id: str) -> str:
    return f"rerun:{run_id}:{record_id}"


def run_of_record_key(event_key: str | None) -> str | None:
    """The run id in a run's dedupe key (see run_record), else None."""
    kind, _, rest = (event_key or "").partition(":")
    run_id, sep, _ = rest.partition(":")
    return run_id if kind == "rerun" and sep and run_id else None


def replay(job_id: str, nonce: str) -> str:
    return f"replay:{job_id}:{nonce}"


def company_of_contacts(account_id15: str) -> str:
    return f"company:Account:{account_id15}"


# -- operator runs ----------------------------------------------------------------
RUN_TTL_S = 7 * 86_400


def run(run_id: str) -> str:
    return f"run:{run_id}"


def run_jobs(run_id: str) -> str:
    return f"run:{run_id}:jobs"


def run_ids(run_id: str) -> str:
    """The ids a dry run by ids was given, for the worker that prices it."""
    return f"run:{run_id}:ids"


REVERIFY_RUNS = "reverify:runs"    # recent re-verification run ids, newest first
REVERIFY_LAST = "reverify:last"    # what the last trigger did, for operators
REVERIFY_LOCK = "reverify:lock"
REFRESH_RUNS = "refresh:runs"      # recent refresh run ids, newest first
REFRESH_LAST = "refresh:last"      # what the last refresh trigger did
REFRESH_LOCK = "refresh:lock"

# -- providers --------------------------------------------------------------------


def response_cache(endpoint: str, digest: str) -> str:
    return f"cache:{endpoint}:{digest}"


def rate_limit_window(limiter: str, window_s: int) -> str:
    return f"ratelimit:{limiter}:{window_s}s"


def rate_limit_live_waiting(limiter: str) -> str:
    """Set while live work waits for a slot (until that slot should be
    free, a few seconds at most): bulk callers take none meanwhile."""
    return f"ratelimit:{limiter}:live_waiting"


def response_in_flight(cache_key: str) -> str:
    """The coalescing lock of one cached request."""
    return f"{cache_key}:inflight"


def clearout_blocked_until(limiter: str, family: str) -> str:
    return f"ratelimit:clearout:{limiter}:{family}:blocked_until"


def clodura_limiter(api_key: str) -> str:
    """The shared limiter's name for one Clodura key (its last six characters)."""
    return f"clodura:{api_key[-6:]}"


def breaker(provider: str) -> str:
    """A provider's circuit breaker: failures in a row, open_until."""
    return f"breaker:{provider}"


def breaker_probe(provider: str) -> str:
    """Held by the one call that probes a provider whose breaker was open."""
    return f"breaker:{provider}:probe"


def clodura_poll_limiter(api_key: str) -> str:
    """The polls' own small share of one Clodura key's limit."""
    return f"{clodura_limiter(api_key)}:polls"


def catch_all_domain(domain: str) -> str:
    return f"catchall:{domain}"


# Account signals (Clodura job posts, company news): at most one request of
# each kind per Account a day. The value is the job that asked (so its own
# replay may ask again); no provider data.
SIGNAL_ASKED_TTL_S = 86_400


def signal_asked(kind: str, account_id15: str) -> str:
    return f"signals:{kind}:Account:{account_id15}"


QUOTA_UNTIL = "clodura:quota_exhausted_until"
CREDITS_PAUSED = "clodura:credits_paused"      # value: reason
BUDGET_PAUSED_UNTIL = "clodura:budget_paused_until"
CREDITS_SPENT_TTL_S = 3 * 86_400


def credits_spent(provider: str, day: str) -> str:
    return f"credits:{provider}:spent:{day}"


def credits_reserved(provider: str) -> str:
    """Credits held for requests not settled yet: "<job>:<step>" -> "cost|lapses at"."""
    return f"credits:{provider}:reserved"


def credits_remaining(provider: str) -> str:
    return f"credits:{provider}:remaining"


# Clearout bulk lists (crm_enrich/flow/clearout_lists.py): bookkeeping and
# job ids only; the addresses stay on the jobs (≤ 24 h) and in the file.
CLEAROUT_LIST_TTL_S = 7 * 86_400
CLEAROUT_LISTS_DUE = "clearout:lists:due"    # open lists by when the sweeper next acts on them


def clearout_list(list_key: str) -> str:
    """One list: run, kind, status, Clearout's list id, times, counts."""
    return f"clearout:list:{list_key}"


def clearout_list_members(list_key: str) -> str:
    """The job ids on one list."""
    return f"clearout:list:{list_key}:jobs"


def clearout_list_lease(list_key: str) -> str:
    """Held by the one sweeper acting on a list."""
    return f"clearout:list:{list_key}:lease"


def clearout_run_list(run_id: str, kind: str) -> str:
    """The list a run's jobs of one kind (verify, finder) join now."""
    return f"clearout:run:{run_id}:{kind}:list"


def clearout_run_lists(run_id: str) -> str:
    """Every list of a run, for operators and for the sweeper's checks."""
    return f"clearout:run:{run_id}:lists"


# -- Salesforce -------------------------------------------------------------------
SALESFORCE_API_USAGE = "salesforce:api_usage"
SALESFORCE_PAUSED_UNTIL = "salesforce:paused_until"
SALESFORCE_DESCRIBE_TTL_S = 86_400        # metadata, not provider data


def salesforce_describe(object_type: str) -> str:
    # v2: with restricted picklists' values (a v1 entry lacks them).
    return f"salesforce:describe:v2:{object_type}"


# The mapped fields the org cannot take, as the last worker to start found
# them (metadata, no record data); rewritten at every worker start, so no TTL.
FIELD_MAP_CHECK = "salesforce:field_map_check"


SALESFORCE_READS = "salesforce_reads"      # batch queue names
SALESFORCE_WRITES = "salesforce_writes"


def batch_queue(name: str, part: str) -> str:
    """`part`: pending, delayed, inflight (the index), lease, flush_scheduled,
    corks, recent_jobs (ids only, a minute), and the arrival times."""
    return f"batch:{name}:{part}"


def batch_inflight(name: str, batch_id: str) -> str:
    return f"batch:{name}:inflight:{batch_id}"


# -- the change log ----------------------------------------------------------------
# What each write changed, and why: never a value (docs in crm_enrich/jobs/changes.py).


def changes_of_day(day: str) -> str:
    """One UTC day's changes, a stream (capped at CHANGE_LOG_MAX_PER_DAY)."""
    return f"changes:day:{day}"


def changes_of_record(object_type: str, record_id: str) -> str:
    """A record's latest changes, newest first (capped at CHANGE_LOG_PER_RECORD)."""
    return f"changes:record:{object_type}:{record_id}"


def changes_logged(job_id: str) -> str:
    """Set once a job's write is in the log: a replayed flush logs nothing twice."""
    return f"changes:logged:{job_id}"


# -- the dashboard ------------------------------------------------------------------


def admin_login(nonce: str) -> str:
    """A one-time login link's nonce (it lives LOGIN_LINK_TTL_S)."""
    return f"admin:login:{nonce}"


# -- processes and metrics ----------------------------------------------------------
WORKER_HEARTBEAT = "worker:heartbeat"
WORKER_HEARTBEAT_TTL_S = 120
BEAT_HEARTBEAT = "beat:heartbeat"        # written by beat's own loop (worker/beat.py)
BEAT_HEARTBEAT_TTL_S = 120
METRICS_COUNTERS = "metrics:counters"
