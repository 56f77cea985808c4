"""The whole beat schedule, in one place."""
from __future__ import annotations

from typing import Any

from crm_enrich.queues import (
    BULK_QUEUE,
    CHECK_CREDITS,
    FLUSH_READS,
    FLUSH_WRITES,
    HEARTBEAT,
    RECONCILE,
    REFRESH_OLD_RECORDS,
    REVERIFY_OLD_EMAILS,
    SWEEP_CLEAROUT_LISTS,
    SWEEP_PARKED,
)
from crm_enrich.settings import Settings

HEARTBEAT_EVERY_S = 15.0
# Beat writes its own heartbeat (worker/beat.py) at least this often.
BEAT_HEARTBEAT_EVERY_S = 15.0


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        # Safety net: flushes are scheduled when work is queued; beat makes
        # sure a lost schedule cannot leave a batch waiting.
        "flush-salesforce-reads": {"task": FLUSH_READS, "schedule": 10.0},
        "flush-salesforce-writes": {"task": FLUSH_WRITES, "schedule": 10.0},
        "resume-parked-jobs": {"task": SWEEP_PARKED, "schedule": settings.sweep_interval_s},
        "check-clodura-credits": {"task": CHECK_CREDITS, "schedule": settings.credits_check_interval_s},
        # Proves a pool process takes tasks (/readyz reads the heartbeat).
        "worker-heartbeat": {"task": HEARTBEAT, "schedule": HEARTBEAT_EVERY_S,
                             "options": {"expires": HEARTBEAT_EVERY_S * 2}},
        **clearout_lists_schedule(settings),
        **reverify_schedule(settings),
        **refresh_schedule(settings),
        **reconcile_schedule(settings),
    }


def clearout_lists_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Large runs' Clearout bulk lists, when Clearout is configured: each
    list is acted on when it is due (crm_enrich/flow/clearout_lists.py)."""
    if not settings.clearout_api_token or not settings.clearout_bulk_threshold:
        return {}
    return {"sweep-clearout-lists": {"task": SWEEP_CLEAROUT_LISTS, "schedule": settings.sweep_interval_s,
                                     "options": {"expires": settings.sweep_interval_s * 4}}}


def refresh_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The scheduled refresh, when REFRESH_AFTER_DAYS turns it on: bulk work,
    like re-verification."""
    if settings.refresh_after_days is None:
        return {}
    return {"refresh-old-records": {
        "task": REFRESH_OLD_RECORDS, "schedule": settings.refresh_interval_s,
        "options": {"queue": BULK_QUEUE, "expires": settings.refresh_interval_s}}}


def reconcile_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The safety net (crm_enrich/operations/reconcile.py): bulk work, and a
    trigger still waiting when the next is due expires."""
    if not settings.reconcile_interval_s:
        return {}
    return {"reconcile-unenriched": {
        "task": RECONCILE, "schedule": settings.reconcile_interval_s,
        "options": {"queue": BULK_QUEUE, "expires": settings.reconcile_interval_s}}}


def reverify_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """The periodic re-verification, when REVERIFY_AFTER_DAYS turns it on.
    Bulk work: it waits behind new records' work, and a trigger still
    waiting when the next is due expires instead of piling up."""
    if settings.reverify_after_days is None:
        return {}
    return {"reverify-old-emails": {
        "task": REVERIFY_OLD_EMAILS, "schedule": settings.reverify_interval_s,
        "options": {"queue": BULK_QUEUE, "expires": settings.reverify_interval_s}}}
