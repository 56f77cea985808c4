"""Scheduled refresh: data decays (titles change, people move), so records
enriched long ago are enriched again.

When REFRESH_AFTER_DAYS is set, beat sends REFRESH_OLD_RECORDS every
REFRESH_INTERVAL_S. One trigger works like a re-verification trigger
(crm_enrich/operations/reverify.py), with the same guards: nothing while
spending is paused, while the org's allocation holds bulk work back, or
while the previous refresh's runs are open; no more records than
REFRESH_MAX_PER_RUN and the unspent part of REFRESH_BUDGET_SHARE of the
daily budget pay for (at the price of an enrichment and a verification).
It counts, Contacts, Leads then Accounts, the records whose enrichment time
(the field the map fills from `meta.enriched_at`) is older than the cutoff,
and starts a capped run of kind "refresh" per object, oldest first. Its
jobs go to the bulk queue and run the whole pipeline; the field map's
rules decide what changes, so a `tracked` field takes the new value unless
a person changed it since we wrote it. A record never enriched is a
backfill's work, not this (a null time never compares).
"""
from __future__ import annotations

from datetime import UTC, datetime

from crm_enrich import counters, keys
from crm_enrich.field_map import FieldMap
from crm_enrich.flow.services import Services
from crm_enrich.providers.quota import COSTS
from crm_enrich.queues import SELECT_RERUN_RECORDS
from crm_enrich.salesforce.soql import selection_soql

from . import operator_input, reverify, runs

REFRESH_OBJECTS = ("Contact", "Lead", "Account")
RUNS_KEY = keys.REFRESH_RUNS
LAST_KEY = keys.REFRESH_LAST
LOCK_KEY = keys.REFRESH_LOCK
LOCK_TIMEOUT_S = reverify.LOCK_TIMEOUT_S
# What a person's refresh is expected to cost: a full enrichment and a check.
RECORD_COST = COSTS["enrich"] + COSTS["verify"]


def enriched_at_field(field_map: FieldMap, object_type: str) -> str | None:
    return next((rule.field for rule in field_map.rules_for(object_type) if rule.source == "meta.enriched_at"),
                None)


def refresh_condition(field: str, cutoff: str) -> str:
    return f"{field} < {cutoff}"


def start_refresh(svc: Services, send_task: reverify.SendTask, now: datetime | None = None) -> dict:
    """One scheduled refresh: answers what it did. Raises SalesforceFailure
    from a count; nothing has been started then."""
    settings, r = svc.settings, svc.store.r
    blocked = reverify.why_not_now(svc, send_task, RUNS_KEY, REFRESH_OBJECTS)
    if blocked:
        return {"outcome": blocked}
    can_take = reverify.allowance(settings.refresh_max_per_run, RECORD_COST, settings.clodura_daily_credit_budget,
                                  svc.quota.spent_today(), settings.refresh_budget_share)
    if can_take == 0:
        return {"outcome": "no_budget", "allowance": 0}
    assert settings.refresh_after_days is not None
    cutoff = reverify.cutoff_literal(now or datetime.now(UTC), settings.refresh_after_days)
    plan, left = [], can_take
    for object_type in REFRESH_OBJECTS:
        field = enriched_at_field(svc.field_map, object_type)
        if field is None or left == 0:
            continue
        where = refresh_condition(field, cutoff)
        take = min(left, svc.batches.salesforce.count(selection_soql("COUNT()", object_type, where)))
        if take:
            plan.append((object_type, field, where, take))
            left -= take
    started = []
    for object_type, field, where, take in plan:
        req = operator_input.RerunRequest(object=object_type, kind=operator_input.REFRESH_KIND, where=where,
                                          order_by=field, limit=take)
        run_id = runs.create_run(r, req, total=take, status="selecting")
        pipe = r.pipeline()  # tracked before the send, as re-verification's are
        pipe.lpush(RUNS_KEY, run_id)
        pipe.ltrim(RUNS_KEY, 0, reverify.KEEP_RUNS - 1)
        pipe.expire(RUNS_KEY, runs.RUN_TTL_S)
        pipe.execute()
        send_task(SELECT_RERUN_RECORDS, [run_id, object_type, where, None])
        counters.incr(r, "refresh_selected", take, object=object_type)
        started.append(run_id)
    return {"outcome": "started" if started else "nothing_due", "allowance": can_take, "cutoff": cutoff,
            "selected": can_take - left, "runs": started}
