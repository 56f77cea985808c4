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

from crm_enrich import keys
from crm_enrich.field_map import FieldMap
from crm_enrich.flow.services import Services
from crm_enrich.providers.quota import COSTS

from . import operator_input, reverify

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
    settings = svc.settings
    blocked = reverify.why_not_now(svc, send_task, RUNS_KEY, REFRESH_OBJECTS)
    if blocked:
        return {"outcome": blocked}
    can_take = reverify.allowance(settings.refresh_max_per_run, RECORD_COST, settings.clodura_daily_credit_budget,
                                  svc.quota.spent_today(), settings.refresh_budget_share)
    if can_take == 0:
        return {"outcome": "no_budget", "allowance": 0}
    assert settings.refresh_after_days is not None
    cutoff = reverify.cutoff_literal(now or datetime.now(UTC), settings.refresh_after_days)
    return reverify.start_capped_runs(svc, send_task, can_take, cutoff, objects=REFRESH_OBJECTS,
                                      field_of=enriched_at_field, condition=refresh_condition,
                                      kind=operator_input.REFRESH_KIND, force=False, runs_key=RUNS_KEY,
                                      counter="refresh_selected")
