"""Clearout bulk lists for large runs (docs/clearout.md#bulk-lists).

A run selecting more than CLEAROUT_BULK_THRESHOLD records would make one
rate-limited Clearout call per address (at 25 to 400 a minute, 50,000
addresses take hours). Instead its jobs, when they come to a Clearout
verification (or, with CLEAROUT_FINDER, a finder search), join the run's
list of that kind and park as `awaiting_list`; no worker waits.

The list's life, driven by the sweeper (`sweep_lists`, beat every
SWEEP_INTERVAL_S, acting on each list when it is due):

    collecting → closed → uploaded → done | fell_back

- **collecting**: jobs join. It closes when every job of the run that could
  still join has (the selection is complete, and no job is still before
  that step), or CLEAROUT_BULK_COLLECT_S after it opened. A job that
  comes later opens the run's next list.
- **closed**: the rows are read from the jobs' own data and uploaded (one
  request). A busy account or an outage is retried at the next poll.
- **uploaded**: its progress is asked every CLEAROUT_BULK_POLL_S. Once
  completed, the result file is read and each row's verdict stored on its
  job (the "Job Id" column maps it back), the jobs are queued again, and
  the list is removed at Clearout. A list cancelled (by a person in
  Clearout's app, or by us CLEAROUT_BULK_GIVE_UP_S after its upload)
  keeps the rows it verified; the others, and every row of a list that
  failed or was refused, **fall back** to instant calls, one job at a time.

Every step is safe to repeat: a sweeper killed half way leaves the list in
its state, and the next sweep does the step again (results are stored
again with the same values; a job queued twice runs once). What Redis
holds of a list is bookkeeping and job ids; the addresses stay on their
jobs (at most 24 h) and in the uploaded file.
"""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import redis

from crm_enrich import counters, keys
from crm_enrich.field_map import is_blank
from crm_enrich.jobs.state import State
from crm_enrich.jobs.store import Job, JobMemory
from crm_enrich.logs import log
from crm_enrich.providers.clearout_bulk import (
    JOB_COLUMN,
    ClearoutBulk,
    Kind,
    row_cancelled,
    row_found_email,
    row_verdict,
)
from crm_enrich.providers.errors import ProviderRejected, ProviderUnavailable
from crm_enrich.providers.rate_limit import RateLimited
from crm_enrich.redis_typing import members, text, text_hash, text_set

from .reveal import CLEAROUT_FINDER, company_domain, finder_query
from .services import Services

VERIFY: Kind = "verify"
FINDER: Kind = "finder"
# The job's slots: which list it joined with which row, and the list's answer.
ENTRY = {VERIFY: "list:verify", FINDER: "list:finder"}
RESULT = {VERIFY: "list:verify:result", FINDER: "list:finder:result"}

COLLECTING, CLOSED, UPLOADED, DONE, FELL_BACK = "collecting", "closed", "uploaded", "done", "fell_back"
OPEN = frozenset({COLLECTING, CLOSED, UPLOADED})
# Longer than one step on a list takes (an upload reads for 60 s at most).
LEASE_MS = 120_000
# A job still on a list this long after every deadline has passed lost its
# wake-up (Redis lost it): queued again, it finds out and goes on alone.
ORPHAN_GRACE_S = 3600
RESULT_CHUNK = 1000

# States a run's job may be in before it comes to each kind of step.
BEFORE_FINDER = frozenset({State.RECEIVED, State.ENRICHING, State.AWAITING_EMAIL, State.DEFERRED, State.PAUSED})
BEFORE_VERIFY = BEFORE_FINDER | {State.AWAITING_PHONE, State.VERIFYING, State.AWAITING_VERIFICATION}


class OnList:
    """The job waits on a list: park it as `awaiting_list`."""


ON_LIST = OnList()
ResumeMany = Callable[[list[str], str], None]


# ---------------------------------------------------------------------------
# The job's side
# ---------------------------------------------------------------------------

def list_run(svc: Services, job: Job, kind: Kind) -> str | None:
    """The job's run, if that run's Clearout calls of this kind go on lists."""
    settings = svc.settings
    if svc.clearout is None or not settings.clearout_bulk_threshold:
        return None
    if (kind == FINDER and not settings.clearout_finder) or (kind == VERIFY and settings.verify_provider == "clodura"):
        return None
    run_id = keys.run_of_record_key(job.dedupe_key)
    if run_id is None:
        return None
    total = svc.store.r.hget(keys.run(run_id), "total")
    return run_id if total not in (None, "") and int(total) > settings.clearout_bulk_threshold else None


# Join the run's list of this kind if it still collects, else open the next.
# KEYS: the run's pointer, the current list and its jobs, the new list and
# its jobs, the due index, the run's lists. ARGV: the pointer as read, the
# new list's name, job id, now, due, run, kind, source, ttl. Answers the
# list joined, or "" when the pointer moved meanwhile (read it again).
_JOIN = """
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return '' end
if current ~= '' and redis.call('HGET', KEYS[2], 'status') == 'collecting' then
  redis.call('SADD', KEYS[3], ARGV[3])
  return current
end
redis.call('HSET', KEYS[4], 'status', 'collecting', 'run', ARGV[6], 'kind', ARGV[7], 'source', ARGV[8],
           'created_at', ARGV[4])
redis.call('EXPIRE', KEYS[4], ARGV[9])
redis.call('SADD', KEYS[5], ARGV[3])
redis.call('EXPIRE', KEYS[5], ARGV[9])
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[9])
redis.call('ZADD', KEYS[6], ARGV[5], ARGV[2])
redis.call('SADD', KEYS[7], ARGV[2])
redis.call('EXPIRE', KEYS[7], ARGV[9])
return ARGV[2]
"""


def _join(svc: Services, job: Job, run_id: str, kind: Kind) -> str | None:
    r = svc.store.r
    pointer = keys.clearout_run_list(run_id, kind)
    for _ in range(5):
        current = text(r.get(pointer)) or ""
        new = f"{kind}-{uuid.uuid4().hex[:16]}"
        joined = r.eval(_JOIN, 7, pointer, keys.clearout_list(current), keys.clearout_list_members(current),
                        keys.clearout_list(new), keys.clearout_list_members(new), keys.CLEAROUT_LISTS_DUE,
                        keys.clearout_run_lists(run_id),
                        current, new, job.id, time.time(), time.time(), run_id, kind, job.source,
                        keys.CLEAROUT_LIST_TTL_S)
        if joined:
            if joined == new:
                log.info("clearout_list.opened", list=new, run_id=run_id, kind=kind)
            return str(joined)
    return None


def _on_list(svc: Services, job: Job, memory: JobMemory, kind: Kind, row: dict) -> dict | None | OnList:
    """The list's answer for this job (a dict), ON_LIST while it waits, or
    None when this job's call is made alone (not a large run, or its list
    fell back)."""
    result = memory.get(RESULT[kind])
    if result is not None:
        return None if result.get("fallback") else result
    entry = memory.get(ENTRY[kind])
    if entry is not None:
        r = svc.store.r
        status = r.hget(keys.clearout_list(entry["list"]), "status")
        if status in OPEN and r.sismember(keys.clearout_list_members(entry["list"]), job.id):
            return ON_LIST
        return None  # the list is over (or gone) without an answer for us
    run_id = list_run(svc, job, kind)
    if run_id is None:
        return None
    list_key = _join(svc, job, run_id, kind)
    if list_key is None:
        return None
    memory.keep(ENTRY[kind], {"list": list_key, "row": row, "at": time.time()})
    log.info("job.on_clearout_list", job_id=job.id, record_id=job.record_id, list=list_key, kind=kind)
    return ON_LIST


def verdict_on_list(svc: Services, job: Job, memory: JobMemory, email: str) -> dict | None | OnList:
    """A Clearout verdict (asdict of ClearoutVerdict) from the run's list,
    ON_LIST while it is on its way, or None: verify at once."""
    got = _on_list(svc, job, memory, VERIFY, {"Email": email})
    if not isinstance(got, dict):
        return got
    return got["verdict"] if got.get("email") == email else None


def found_on_list(svc: Services, job: Job, memory: JobMemory, record: dict,
                  person: dict | None) -> dict | None | OnList:
    """The finder's outcome (as found_by_clearout gives it) from the run's
    list, ON_LIST while it is on its way, or None: search at once."""
    if CLEAROUT_FINDER in memory:
        return memory[CLEAROUT_FINDER]
    name, company = finder_query(record, person)
    if not name or company is None or is_blank(company):
        return None
    first = record.get("FirstName") if not is_blank(record.get("FirstName")) else ""
    last = record.get("LastName") if not is_blank(record.get("LastName")) else ""
    org_name = record.get("Account.Name") or record.get("Company") or ""
    row = {"First Name": first or name, "Last Name": last or "", "Company": org_name,
           "Domain": company_domain(record, person) or ""}
    got = _on_list(svc, job, memory, FINDER, row)
    if not isinstance(got, dict):
        return got
    email = got.get("email")
    log.info("job.found_by_clearout", job_id=job.id, record_id=job.record_id, found=bool(email), via="list")
    return memory.keep(CLEAROUT_FINDER, {
        "email": email, "email_status": None, "credits": 0, "provider": "clearout" if email else None,
        "reason": None if email else "not found by Clodura or Clearout"})


# ---------------------------------------------------------------------------
# The sweeper's side
# ---------------------------------------------------------------------------

def sweep_lists(svc: Services, resume_many: ResumeMany, now: float | None = None) -> int:
    """Act on every list that is due; answers how many were acted on."""
    r = svc.store.r
    now = now or time.time()
    acted = 0
    for list_key in members(r.zrangebyscore(keys.CLEAROUT_LISTS_DUE, "-inf", now)):
        lease, holder = keys.clearout_list_lease(list_key), uuid.uuid4().hex
        if not r.set(lease, holder, nx=True, px=LEASE_MS):
            continue  # another sweeper is on it
        try:
            _tend(svc, list_key, resume_many, now)
            acted += 1
        except Exception as exc:  # noqa: BLE001  one list's trouble must not hold back the others
            log.exception("clearout_list.sweep_failed", list=list_key, error=type(exc).__name__)
            _due(svc, list_key, now + svc.settings.clearout_bulk_poll_s)
        finally:
            if r.get(lease) == holder:
                r.delete(lease)
    _wake_orphans(svc, resume_many, now)
    return acted


def _tend(svc: Services, list_key: str, resume_many: ResumeMany, now: float) -> None:
    r = svc.store.r
    info = text_hash(r.hgetall(keys.clearout_list(list_key)))
    if not info or info.get("status") not in OPEN:
        r.zrem(keys.CLEAROUT_LISTS_DUE, list_key)
        return
    status = info["status"]
    if status != COLLECTING and now - float(info["closed_at"]) > svc.settings.clearout_bulk_give_up_s + ORPHAN_GRACE_S:
        # Past every deadline (an error met at each sweep, say): the jobs go on alone.
        _finish(svc, list_key, info, {}, resume_many, "past its deadline")
        return
    if status == COLLECTING:
        if not _ready_to_close(svc, list_key, info, now):
            _due(svc, list_key, now)  # looked at again at the next sweep
            return
        r.hset(keys.clearout_list(list_key), mapping={"status": CLOSED, "closed_at": now})
        info.update(status=CLOSED, closed_at=str(now))
        log.info("clearout_list.closed", list=list_key, jobs=r.scard(keys.clearout_list_members(list_key)))
    if info["status"] == CLOSED:
        _upload(svc, list_key, info, resume_many, now)
    else:
        _follow(svc, list_key, info, resume_many, now)


def _due(svc: Services, list_key: str, at: float) -> None:
    svc.store.r.zadd(keys.CLEAROUT_LISTS_DUE, {list_key: at})


def _members(svc: Services, list_key: str) -> list[str]:
    return sorted(text_set(svc.store.r.smembers(keys.clearout_list_members(list_key))))


def _ready_to_close(svc: Services, list_key: str, info: dict, now: float) -> bool:
    """Every job of the run that could still join has, or the list has
    collected for long enough."""
    if now - float(info["created_at"]) >= svc.settings.clearout_bulk_collect_s:
        return True
    r, run_id, kind = svc.store.r, info["run"], info["kind"]
    if r.hget(keys.run(run_id), "status") in ("selecting", "queueing", "counting"):
        return False  # more jobs are coming
    job_ids = sorted(text_set(r.smembers(keys.run_jobs(run_id))))
    pipe = r.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hget(keys.job(job_id), "state")
    states = dict(zip(job_ids, pipe.execute(), strict=True))
    before = BEFORE_FINDER if kind == FINDER else BEFORE_VERIFY
    if any(state in before for state in states.values()):
        return False
    if kind == FINDER:
        return True
    # A job on one of the run's finder lists comes to verification later.
    on_verify_lists: set[str] = set()
    for other in text_set(r.smembers(keys.clearout_run_lists(run_id))):
        if other.startswith(VERIFY):
            on_verify_lists |= text_set(r.smembers(keys.clearout_list_members(other)))
    return not any(state == State.AWAITING_LIST and job_id not in on_verify_lists
                   for job_id, state in states.items())


def _entries(svc: Services, list_key: str, kind: Kind, job_ids: list[str]) -> dict[str, dict | None]:
    """Each member's entry (the row it joined with), if it is on this list."""
    pipe = svc.store.r.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hget(keys.job_provider_data(job_id), ENTRY[kind])
    out: dict[str, dict | None] = {}
    for job_id, raw in zip(job_ids, pipe.execute(), strict=True):
        entry = json.loads(raw) if raw else None
        out[job_id] = entry if entry and entry.get("list") == list_key else None
    return out


def _bulk(svc: Services) -> ClearoutBulk:
    return ClearoutBulk(svc.clearout_client())


def _upload(svc: Services, list_key: str, info: dict, resume_many: ResumeMany, now: float) -> None:
    kind: Kind = VERIFY if info["kind"] == VERIFY else FINDER
    entries = _entries(svc, list_key, kind, _members(svc, list_key))
    rows = [{**entry["row"], JOB_COLUMN: job_id} for job_id, entry in entries.items() if entry]
    if not rows:
        _finish(svc, list_key, info, {}, resume_many, "nothing to upload")
        return
    try:
        list_id = _bulk(svc).upload(kind, f"crm-enrich-{list_key}", rows)
    except (ProviderUnavailable, RateLimited) as exc:  # busy, an outage, the window used up
        if now - float(info["closed_at"]) > svc.settings.clearout_bulk_give_up_s:
            _finish(svc, list_key, info, {}, resume_many, f"upload failed until the deadline: {exc}")
        else:
            log.info("clearout_list.upload_later", list=list_key, error=str(exc)[:200])
            _due(svc, list_key, now + svc.settings.clearout_bulk_poll_s)
        return
    except ProviderRejected as exc:  # refused: credits, the daily limit, the file
        _finish(svc, list_key, info, {}, resume_many, f"upload refused: {exc}")
        return
    r = svc.store.r
    r.hset(keys.clearout_list(list_key), mapping={"status": UPLOADED, "list_id": list_id, "uploaded_at": now,
                                                   "rows": len(rows), "percent": 0})
    counters.incr(r, "clearout_lists_uploaded", kind=kind)
    counters.incr(r, "clearout_list_rows", len(rows), kind=kind)
    log.info("clearout_list.uploaded", list=list_key, list_id=list_id, rows=len(rows))
    _due(svc, list_key, now + svc.settings.clearout_bulk_poll_s)


def _follow(svc: Services, list_key: str, info: dict, resume_many: ResumeMany, now: float) -> None:
    kind: Kind = VERIFY if info["kind"] == VERIFY else FINDER
    bulk, list_id, r = _bulk(svc), info["list_id"], svc.store.r
    waited = now - float(info["uploaded_at"])
    give_up = svc.settings.clearout_bulk_give_up_s
    try:
        progress = bulk.progress(kind, list_id)
        if progress.status == "completed":
            _finish(svc, list_key, info, _by_job(bulk.result_rows(kind, list_id)), resume_many, None)
            return
        if progress.status == "cancelled":
            try:
                rows = _by_job(bulk.result_rows(kind, list_id))  # what it verified before
            except ProviderRejected:
                rows = {}
            _finish(svc, list_key, info, rows, resume_many, "list cancelled")
            return
        if progress.status in ("failed", "error"):
            _finish(svc, list_key, info, {}, resume_many, f"list {progress.status}")
            return
    except ProviderRejected as exc:  # the list is not available (1029), not ours (1008)
        _finish(svc, list_key, info, {}, resume_many, f"list lost: {exc}")
        return
    except (ProviderUnavailable, RateLimited) as exc:
        log.info("clearout_list.check_failed", list=list_key, error=str(exc)[:200])
        progress = None
    if progress is not None:
        r.hset(keys.clearout_list(list_key), "percent", progress.percent or 0)
    if waited > give_up and not info.get("cancelled_at"):
        try:
            bulk.cancel(kind, list_id)
        except (ProviderRejected, ProviderUnavailable, RateLimited) as exc:
            log.warning("clearout_list.cancel_failed", list=list_key, error=str(exc)[:200])
        r.hset(keys.clearout_list(list_key), "cancelled_at", now)
        log.warning("clearout_list.gave_up", list=list_key, waited_s=round(waited))
    elif waited > give_up + ORPHAN_GRACE_S / 4:
        _finish(svc, list_key, info, {}, resume_many, f"no result {round(waited)} s after the upload")
        return
    _due(svc, list_key, now + svc.settings.clearout_bulk_poll_s)


def _by_job(rows: list[dict]) -> dict[str, dict]:
    return {row[JOB_COLUMN]: row for row in rows if row.get(JOB_COLUMN)}


def _answer(kind: Kind, entry: dict | None, row: dict | None) -> dict | None:
    """What the list says for one job, or None (a fallback)."""
    if entry is None or row is None or row_cancelled(row):
        return None
    if kind == VERIFY:
        email = entry["row"]["Email"]
        if (row.get("Email") or "").strip().lower() != email.strip().lower():
            return None
        return {"email": email, "verdict": asdict(row_verdict(row))}
    if not (row.get("Clearout Finder Status") or "").strip():
        return None  # never searched
    return {"email": row_found_email(row)}


def _finish(svc: Services, list_key: str, info: dict, rows: dict[str, dict], resume_many: ResumeMany,
            fallback_reason: str | None) -> None:
    """Store each member's answer (or its fallback) on its job, queue the
    jobs again, and close the list's books."""
    kind: Kind = VERIFY if info["kind"] == VERIFY else FINDER
    r, store = svc.store.r, svc.store
    members = _members(svc, list_key)
    entries = _entries(svc, list_key, kind, members)
    answered = 0
    expire_at = int(time.time() + store.provider_ttl_s)
    for start in range(0, len(members), RESULT_CHUNK):
        chunk = members[start:start + RESULT_CHUNK]
        pipe = r.pipeline(transaction=False)
        for job_id in chunk:
            answer = _answer(kind, entries[job_id], rows.get(job_id))
            answered += answer is not None
            value = answer or {"fallback": fallback_reason or "not in the list's result"}
            key = keys.job_provider_data(job_id)
            pipe.hset(key, RESULT[kind], json.dumps(value))
            pipe.expireat(key, expire_at, nx=True)  # as JobStore.save_provider_data: never past 24 h
            pipe.expireat(key, expire_at, lt=True)
        pipe.execute()
        resume_many(chunk, info.get("source") or "rerun")
        r.pexpire(keys.clearout_list_lease(list_key), LEASE_MS)
    status = DONE if fallback_reason is None else FELL_BACK
    r.hset(keys.clearout_list(list_key), mapping={"status": status, "finished_at": time.time(),
                                                   "answered": answered, "fell_back": len(members) - answered,
                                                   "reason": fallback_reason or ""})
    r.zrem(keys.CLEAROUT_LISTS_DUE, list_key)
    counters.incr(r, "clearout_lists_finished", kind=kind, outcome=status)
    log.info("clearout_list.finished", list=list_key, status=status, answered=answered,
             fell_back=len(members) - answered, reason=fallback_reason)
    if info.get("list_id"):
        try:  # Clearout keeps results 30 days: not needed any more
            _bulk(svc).remove(kind, info["list_id"])
        except (ProviderRejected, ProviderUnavailable, RateLimited) as exc:
            log.info("clearout_list.remove_failed", list=list_key, error=str(exc)[:200])


def _wake_orphans(svc: Services, resume_many: ResumeMany, now: float) -> None:
    """Jobs on a list long past every deadline: their wake-up was lost."""
    settings = svc.settings
    oldest = now - settings.clearout_bulk_collect_s - 2 * settings.clearout_bulk_give_up_s - ORPHAN_GRACE_S
    stale = members(svc.store.r.zrangebyscore(keys.jobs_in_state(State.AWAITING_LIST), "-inf", oldest))
    if stale:
        log.warning("clearout_list.orphans_woken", jobs=len(stale))
        resume_many(stale, "rerun")


def list_view(r: redis.Redis, run_id: str) -> list[dict[str, Any]]:
    """A run's lists, for operators: their state, counts and times."""
    out = []
    for list_key in sorted(text_set(r.smembers(keys.clearout_run_lists(run_id)))):
        info = text_hash(r.hgetall(keys.clearout_list(list_key)))
        if info:
            out.append({"list": list_key, "kind": info.get("kind"), "status": info.get("status"),
                        "jobs": r.scard(keys.clearout_list_members(list_key)),
                        **{name: int(float(info[name])) for name in ("percent", "rows", "answered", "fell_back")
                           if info.get(name) not in (None, "")},
                        **({"reason": info["reason"]} if info.get("reason") else {})})
    return out
