"""Reconciliation, the safety net under every other guarantee: now and
then (beat, RECONCILE_INTERVAL_S), records created in the last
RECONCILE_LOOKBACK_DAYS that we never enriched are selected and queued as a
bulk run of kind `reconcile`.

It finds what nothing else can: a record whose Outbound Message Salesforce
gave up on (after 24 h of failed deliveries), or whose job a Redis without
persistence lost. A record with a job we know of (in flight, or finished:
a skipped or failed one is the operator's to re-run) is left alone, so a
record is never queued twice by reconciliation. Per object it costs a count
and the selection's pages, and it waits, like every bulk run, while the
org's API allocation is above its bulk share.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from crm_enrich.field_map import FieldMap
from crm_enrich.flow.services import Services
from crm_enrich.logs import log
from crm_enrich.queues import SELECT_RERUN_RECORDS
from crm_enrich.salesforce.ids import PERSON_OBJECTS

from . import operator_input, runs
from .reverify import cutoff_literal

RECONCILE_OBJECTS = (*sorted(PERSON_OBJECTS), "Account")


def enriched_at_field(field_map: FieldMap, object_type: str) -> str | None:
    """The field our enrichment time is written to, if the map writes one."""
    return next((rule.field for rule in field_map.rules_for(object_type)
                 if rule.source == "meta.enriched_at"), None)


def reconcile_condition(enriched_at: str, created_after: str) -> str:
    return f"CreatedDate >= {created_after} AND {enriched_at} = null"


def start_reconcile(svc: Services, send_task: Callable[[str, list], None],
                    now: datetime | None = None) -> dict:
    """Start one reconciliation run per mapped object; answers what it did."""
    if not svc.batches.guard.may_call(urgent=False):
        return {"outcome": "salesforce_allocation", "runs": []}
    created_after = cutoff_literal(now or datetime.now(UTC), svc.settings.reconcile_lookback_days)
    started = []
    for object_type in RECONCILE_OBJECTS:
        field = enriched_at_field(svc.field_map, object_type)
        if field is None:
            continue
        where = reconcile_condition(field, created_after)
        req = operator_input.RerunRequest(object=object_type, kind=operator_input.RECONCILE_KIND, where=where)
        run_id = runs.create_run(svc.store.r, req, total=None, status="selecting")
        send_task(SELECT_RERUN_RECORDS, [run_id, object_type, where, None])
        started.append(run_id)
    log.info("reconcile.started", runs=started, created_after=created_after)
    return {"outcome": "started", "runs": started}

