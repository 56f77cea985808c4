"""What an operator may ask, checked strictly: a re-run or backfill request,
a replay request. Bad input raises InvalidRequest (answered 400), and
nothing is started."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from crm_enrich.queues import REVERIFY_SOURCE
from crm_enrich.salesforce import soql
from crm_enrich.salesforce.ids import OBJECTS, SF_ID, to_id18

MAX_IDS = 10_000
RUN_KINDS = ("rerun", "backfill")  # what an operator may start
# Started by beat (crm_enrich/operations/reverify.py), never by an operator:
# its jobs only verify the email.
REVERIFY_KIND = "reverify"
# Started by beat too (crm_enrich/operations/refresh.py): records enriched
# long ago are enriched again.
REFRESH_KIND = "refresh"
# Started by beat (crm_enrich/operations/reconcile.py): records we never enriched.
RECONCILE_KIND = "reconcile"
SOURCE_FOR_KIND = {"rerun": "rerun", "backfill": "backfill", REVERIFY_KIND: REVERIFY_SOURCE,
                   REFRESH_KIND: "refresh", RECONCILE_KIND: RECONCILE_KIND}


class InvalidRequest(ValueError):
    """Bad operator input: answered 400, nothing started."""


def validate_where(where: Any) -> str:
    """An operator's SOQL condition, or InvalidRequest saying what is wrong."""
    try:
        return soql.validate_where(where)
    except soql.InvalidCondition as exc:
        raise InvalidRequest(str(exc)) from None


@dataclass(frozen=True)
class RerunRequest:
    object: str
    kind: str = "rerun"
    ids: tuple[str, ...] | None = None
    where: str | None = None
    force: bool = False
    dry_run: bool = False
    # A capped selection: the first `limit` records in `order_by` order
    # (always read with REST paging: Bulk API 2.0 queries should not sort
    # or limit).
    order_by: str | None = None
    limit: int | None = None

def parse_rerun(payload: Any, kind: str = "rerun") -> RerunRequest:
    """Strict validation of a re-run or backfill request body."""
    if not isinstance(payload, dict):
        raise InvalidRequest("body must be a JSON object")
    unknown = set(payload) - {"object", "ids", "where", "force", "dryRun", "kind"}
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    kind = payload.get("kind", kind)
    if kind not in RUN_KINDS:
        raise InvalidRequest(f"kind must be one of {list(RUN_KINDS)}")
    object_type = payload.get("object")
    if object_type not in OBJECTS:
        raise InvalidRequest(f"object must be one of {list(OBJECTS)}")
    for flag in ("force", "dryRun"):
        if flag in payload and not isinstance(payload[flag], bool):
            raise InvalidRequest(f"{flag} must be true or false")
    has_ids, has_where = "ids" in payload, "where" in payload
    if has_ids and has_where:
        raise InvalidRequest("give exactly one of ids or where")
    if not has_ids and not has_where:
        if kind != "backfill":
            raise InvalidRequest("give exactly one of ids or where")
        return RerunRequest(object=object_type, kind=kind, force=payload.get("force", False),
                            dry_run=payload.get("dryRun", False))  # a backfill of every record
    ids = where = None
    if has_ids:
        raw = payload["ids"]
        if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_IDS:
            raise InvalidRequest(f"ids must be a list of 1 to {MAX_IDS} Salesforce ids")
        for i, value in enumerate(raw):
            if not isinstance(value, str) or not SF_ID.match(value):
                raise InvalidRequest(f"ids[{i}] must be a 15- or 18-character Salesforce id")
        ids = tuple(dict.fromkeys(to_id18(v) for v in raw))
    else:
        where = validate_where(payload["where"])
    return RerunRequest(object=object_type, kind=kind, ids=ids, where=where,
                        force=payload.get("force", False), dry_run=payload.get("dryRun", False))



def parse_replay(payload: Any) -> list[str] | None:
    """The job ids to replay, or None for all of them."""
    if not isinstance(payload, dict):
        raise InvalidRequest("body must be a JSON object")
    unknown = set(payload) - {"jobIds", "all"}
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    if "all" in payload:
        if payload["all"] is not True or "jobIds" in payload:
            raise InvalidRequest('give either {"all": true} or {"jobIds": [...]}')
        return None
    job_ids = payload.get("jobIds")
    if not isinstance(job_ids, list) or not 1 <= len(job_ids) <= MAX_IDS:
        raise InvalidRequest(f"jobIds must be a list of 1 to {MAX_IDS} job ids")
    for i, job_id in enumerate(job_ids):
        if not isinstance(job_id, str) or not re.fullmatch(r"[0-9a-f]{32}", job_id):
            raise InvalidRequest(f"jobIds[{i}] is not a job id")
    return list(dict.fromkeys(job_ids))
