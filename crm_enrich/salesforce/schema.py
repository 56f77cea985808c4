"""The org's describe of the mapped objects: checked against the field map
when a worker starts, and used to fit values to each field's type and
length. Cached in Redis for a day (it is metadata, not provider data)."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import redis

from crm_enrich import keys
from crm_enrich.field_map import FieldMap, FieldProblem, check_against_describe, without_problems
from crm_enrich.logs import log
from crm_enrich.salesforce.gateway import SalesforceFailure, SalesforceGateway


class OrgSchema:
    def __init__(self, client: redis.Redis, gateway: SalesforceGateway):
        self.r = client
        self.gateway = gateway

    def forget(self, object_types: list[str]) -> None:
        """Drop the cached describes: a worker starting after a fix in the
        org must see the fix, not yesterday's answer."""
        if object_types:
            self.r.delete(*(keys.salesforce_describe(obj) for obj in object_types))

    def describe(self, object_type: str) -> dict | None:
        key = keys.salesforce_describe(object_type)
        cached = self.r.get(key)
        if cached:
            return json.loads(cached)
        try:
            answer = self.gateway.describe(object_type)
        except SalesforceFailure as exc:
            if exc.code in ("NOT_FOUND", "INVALID_TYPE"):
                return None
            raise
        slim = {"name": answer.get("name", object_type), "fields": [_slim(f) for f in answer.get("fields", [])]}
        self.r.set(key, json.dumps(slim), ex=keys.SALESFORCE_DESCRIBE_TTL_S)
        return slim


def _slim(field: dict) -> dict:
    """What fitting a value needs of a field: its type and length, whether
    we may update it and, for a restricted picklist, the values it offers
    (Salesforce refuses the whole record for any other)."""
    slim = {k: field.get(k) for k in ("name", "type", "length", "updateable")}
    if field.get("restrictedPicklist"):
        slim["restrictedPicklist"] = True
        slim["picklistValues"] = [{"value": v.get("value"), "active": v.get("active", True)}
                                  for v in field.get("picklistValues") or []]
    return slim


@dataclass(frozen=True)
class FieldMapCheck:
    """The field map checked against the org: `usable` leaves out every
    mapping a problem names. `checked` is False when Salesforce could not
    be asked (then the whole map is used and writes say what is wrong)."""
    usable: FieldMap
    problems: list[FieldProblem] = field(default_factory=list)
    checked: bool = True
    reason: str | None = None


def check_field_map_at_start(field_map: FieldMap, schema: OrgSchema) -> FieldMapCheck:
    try:
        describes = {obj: schema.describe(obj) for obj in field_map.objects}
    except SalesforceFailure as exc:
        log.warning("field_map.unchecked", reason=str(exc))
        return FieldMapCheck(field_map, [], checked=False, reason=str(exc))
    problems = check_against_describe(field_map, describes)
    return FieldMapCheck(without_problems(field_map, problems), problems)


def save_field_map_check(client: redis.Redis, check: FieldMapCheck) -> None:
    """For the web process: /readyz and the dashboard show what was left out."""
    client.set(keys.FIELD_MAP_CHECK, json.dumps({
        "checkedAt": round(time.time(), 3), "checked": check.checked, "reason": check.reason,
        "problems": [p.as_dict() for p in check.problems]}))


def load_field_map_check(client: redis.Redis) -> dict | None:
    """What the last worker to start found: {"checkedAt", "checked",
    "reason", "problems": [{"object", "field", "problem", "fix"}]}."""
    raw = client.get(keys.FIELD_MAP_CHECK)
    return json.loads(raw) if raw else None
