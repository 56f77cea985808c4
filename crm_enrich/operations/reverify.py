"""Periodic re-verification of old email verdicts.

When REVERIFY_AFTER_DAYS is set, beat sends REVERIFY_OLD_EMAILS every
REVERIFY_INTERVAL_S. One trigger:

1. does nothing while the previous trigger's runs are still going (their
   records' verdict times have not moved yet, so they would be picked
   again; a run whose selection task was lost gets it sent again), while
   credit spending is paused (quota, credits, budget), or while the org's
   API allocation only allows new records' work;
2. works out how many verifications it may pay for: REVERIFY_MAX_PER_RUN
   and, with a daily credit budget, what is left of REVERIFY_BUDGET_SHARE
   of it at the cost of one verification;
3. counts, Contacts then Leads, the records with an email whose verdict is
   older than the cutoff (records never verified are a backfill's work, not
   this) until the allowance is used up;
4. starts a capped re-run of kind "reverify" per object. The re-run selector
   reads the oldest verdicts first; every job has source "reverify" (the
   pipeline only verifies the email) and force (a cached verdict is not a
   fresh one), and goes to the bulk queue.

A record re-verified gets a new verdict time, so later runs leave it alone.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard

import redis

from crm_enrich import counters, keys
from crm_enrich.field_map import FieldMap
from crm_enrich.flow.services import Services
from crm_enrich.logs import log
from crm_enrich.providers.quota import COSTS
from crm_enrich.queues import SELECT_RERUN_RECORDS
from crm_enrich.redis_typing import hash_fields, texts
from crm_enrich.salesforce.soql import selection_soql

from . import operator_input, runs

SendTask = Callable[[str, list[Any]], None]

REVERIFY_OBJECTS = ("Contact", "Lead")
RUNS_KEY = keys.REVERIFY_RUNS
LAST_KEY = keys.REVERIFY_LAST
LOCK_KEY = keys.REVERIFY_LOCK
LOCK_TIMEOUT_S = 120         # longer than a trigger takes (a few Redis calls, two COUNT queries)
KEEP_RUNS = 50
# A capped selection is one REST query a page: a run still selecting with
# nothing queued this long after it started (or was resent) lost its task.
SELECTION_STALLED_S = 900


# ---------------------------------------------------------------------------
# Pure logic
# ---------------------------------------------------------------------------

def verification_cost(deep_mode: str) -> float:
    """Credits one record's re-verification is expected to cost: a standard
    check unless every check is deep. (An address found catch-all takes a
    deep check on top; the pipeline's own budget check parks such a job
    rather than overspend.)"""
    return COSTS["verify_deep"] if deep_mode == "always" else COSTS["verify"]


def allowance(max_per_run: int, cost: float, daily_budget: float | None = None,
              spent_today: float = 0.0, share: float = 1.0) -> int:
    """How many records one run may select: the per-run cap and, with a
    daily budget, no more verifications than the unspent part of its share
    pays for."""
    if daily_budget is None:
        return max_per_run
    left = daily_budget * share - spent_today
    # The epsilon absorbs float noise: with 49.88 of 50 spent, 0.12 is left
    # as 0.11999999999999744, which pays for 2.99999999999994 checks.
    return max(0, min(max_per_run, math.floor(left / cost + 1e-9)))


def cutoff_literal(now: datetime, days: int) -> str:
    """The SOQL dateTime literal `days` before `now` (UTC, no quotes)."""
    return (now - timedelta(days=days)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def reverify_condition(verified_at_field: str, cutoff: str) -> str:
    """Records with an email verified before the cutoff. A null verdict time
    never compares, so never-verified records are left to backfills."""
    return f"Email != null AND {verified_at_field} < {cutoff}"


def verified_at_field(field_map: FieldMap, object_type: str) -> str | None:
    """The field our verdict time is written to, if the map writes one."""
    return next((rule.field for rule in field_map.rules_for(object_type)
                 if rule.source == "verification.verified_at"), None)


def run_open(run: dict | None) -> TypeGuard[dict]:
    """A run still selecting, or whose jobs are not all final yet."""
    if run is None or run["status"] in ("finished", "failed"):
        return False
    return run["status"] != "queued" or run["finished"] < run["queued"]


def selection_stalled(run: dict, resent_at: float | None, now: float) -> bool:
    """Still selecting with nothing queued long after the selection task was
    sent: the task was lost (its worker died, or the broker failed, between
    the run's creation and the send)."""
    sent_at = max(run["createdAt"] or 0, resent_at or 0)
    return run["status"] == "selecting" and run["queued"] == 0 and now - sent_at > SELECTION_STALLED_S


# ---------------------------------------------------------------------------
# The scheduled trigger (the task is worker.operation_tasks.reverify_old_emails)
# ---------------------------------------------------------------------------

def why_not_now(svc: Services, send_task: SendTask, runs_key: str = RUNS_KEY,
                objects: tuple[str, ...] = REVERIFY_OBJECTS) -> str | None:
    """Why a scheduled run (re-verification, or refresh with its own
    `runs_key`) may not start now, or None."""
    quota = svc.quota
    if quota.quota_resets_in() > 0 or quota.paused_reason() or quota.budget_paused():
        return "spending_paused"
    if not svc.batches.guard.may_call(urgent=False):
        return "salesforce_allocation"
    r = svc.store.r
    recent = [runs.get_run(svc.store, run_id) for run_id in texts(r.lrange(runs_key, 0, len(objects) - 1))]
    open_runs = [run for run in recent if run_open(run)]
    for run in open_runs:
        key = runs.run_key(run["runId"])
        where, resent_at = r.hmget(key, "where", "resent_at")
        if selection_stalled(run, float(resent_at) if resent_at else None, time.time()):
            # Safe to repeat: a run queues each record once.
            r.hset(key, "resent_at", time.time())
            send_task(SELECT_RERUN_RECORDS, [run["runId"], run["object"], where, None])
            log.warning("reverify.selection_resent", run_id=run["runId"])
    return "previous_run_unfinished" if open_runs else None


def start_reverify(svc: Services, send_task: SendTask, now: datetime | None = None) -> dict:
    """One scheduled run: answers what it did (`outcome`, and the runs it
    started). Raises SalesforceFailure from a count; nothing has been
    started then, so the caller may simply try again."""
    settings = svc.settings
    blocked = why_not_now(svc, send_task)
    if blocked:
        return {"outcome": blocked}
    can_take = allowance(settings.reverify_max_per_run,
                         verification_cost(settings.clodura_deep_verification),
                         settings.clodura_daily_credit_budget, svc.quota.spent_today(),
                         settings.reverify_budget_share)
    if can_take == 0:
        return {"outcome": "no_budget", "allowance": 0}
    # The task only calls with re-verification on (REVERIFY_AFTER_DAYS set).
    assert settings.reverify_after_days is not None
    cutoff = cutoff_literal(now or datetime.now(UTC), settings.reverify_after_days)
    return start_capped_runs(svc, send_task, can_take, cutoff, objects=REVERIFY_OBJECTS,
                             field_of=verified_at_field, condition=reverify_condition,
                             kind=operator_input.REVERIFY_KIND, force=True, runs_key=RUNS_KEY,
                             counter="reverify_selected")


def start_capped_runs(svc: Services, send_task: SendTask, can_take: int, cutoff: str, *,
                      objects: tuple[str, ...], field_of: Callable[[FieldMap, str], str | None],
                      condition: Callable[[str, str], str], kind: str, force: bool, runs_key: str,
                      counter: str) -> dict:
    """A scheduled trigger's runs (re-verification's, refresh's): counts,
    object by object, the records whose `field_of` time is older than the
    cutoff (`condition(field, cutoff)`) until `can_take` are taken, starts a
    capped run of `kind` per object with some, oldest first, and answers
    what it did. Objects whose map writes no such field are passed over."""
    r = svc.store.r
    plan = []
    left = can_take
    for object_type in objects:
        field = field_of(svc.field_map, object_type)
        if field is None or left == 0:
            continue
        where = condition(field, cutoff)
        take = min(left, svc.batches.salesforce.count(selection_soql("COUNT()", object_type, where)))
        if take:
            plan.append((object_type, field, where, take))
            left -= take
    started = []
    for object_type, field, where, take in plan:
        req = operator_input.RerunRequest(object=object_type, kind=kind, where=where, force=force,
                                          order_by=field, limit=take)
        run_id = runs.create_run(r, req, total=take, status="selecting")
        # Tracked before its selection is sent: should the send be lost, a
        # later trigger finds the run stalled and sends it again, and never
        # starts a second run over the same records.
        pipe = r.pipeline()
        pipe.lpush(runs_key, run_id)
        pipe.ltrim(runs_key, 0, KEEP_RUNS - 1)
        pipe.expire(runs_key, runs.RUN_TTL_S)
        pipe.execute()
        send_task(SELECT_RERUN_RECORDS, [run_id, object_type, where, None])
        counters.incr(r, counter, take, object=object_type)
        started.append(run_id)
    return {"outcome": "started" if started else "nothing_due", "allowance": can_take, "cutoff": cutoff,
            "selected": can_take - left, "runs": started}


def record_trigger(r: redis.Redis, result: dict, last_key: str = LAST_KEY, counter: str = "reverify_triggers") -> None:
    """What the last trigger did, for operators."""
    fields = {"at": round(time.time(), 3), "outcome": result["outcome"], "allowance": "", "selected": 0,
              "runs": "", "cutoff": "", "error": ""}
    fields.update({k: ",".join(v) if isinstance(v, list) else v for k, v in result.items()})
    r.hset(last_key, mapping=hash_fields(fields))
    r.expire(last_key, runs.RUN_TTL_S)
    counters.incr(r, counter, outcome=result["outcome"])
