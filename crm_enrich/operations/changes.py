"""The change log as an operator sees it: a record's changes (in its view)
and a period's export as CSV. The log itself is crm_enrich/jobs/changes.py."""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import redis

from crm_enrich.jobs.changes import ChangeLog, as_csv, parse_time
from crm_enrich.settings import Settings

from .operator_input import InvalidRequest


def change_log(r: redis.Redis, settings: Settings) -> ChangeLog:
    return ChangeLog(r, settings.change_log_days, settings.change_log_max_per_day, settings.change_log_per_record)


def parse_period(args: dict[str, Any]) -> tuple[float, float | None]:
    """`since` (required) and `until` (optional): ISO 8601 dates or
    date-times, UTC unless they say otherwise."""
    unknown = set(args) - {"since", "until"}
    if unknown:
        raise InvalidRequest(f"unknown parameter(s): {', '.join(sorted(unknown))}")
    since = parse_time(args.get("since"))
    if since is None:
        raise InvalidRequest("since must be an ISO 8601 date or date-time, e.g. 2025-05-01 or 2025-05-01T12:00:00Z")
    until = None
    if args.get("until") is not None:
        until = parse_time(args["until"])
        if until is None:
            raise InvalidRequest("until must be an ISO 8601 date or date-time")
        if until < since:
            raise InvalidRequest("until is before since")
    if since > time.time():
        raise InvalidRequest("since is in the future")
    return since, until


def export_csv(log: ChangeLog, since: float, until: float | None) -> Iterator[str]:
    return as_csv(log.between(since, until))
