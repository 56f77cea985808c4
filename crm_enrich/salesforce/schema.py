"""The org's describe of the mapped objects: checked against the field map
when a worker starts, and used to fit values to each field's type and
length. Cached in Redis for a day (it is metadata, not provider data)."""
from __future__ import annotations

import json

import redis

from crm_enrich import keys
from crm_enrich.field_map import FieldMap, check_against_describe
from crm_enrich.logs import log
from crm_enrich.salesforce.gateway import SalesforceFailure, SalesforceGateway


class OrgSchema:
    def __init__(self, client: redis.Redis, gateway: SalesforceGateway):
        self.r = client
        self.gateway = gateway

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


def check_field_map_at_start(field_map: FieldMap, schema: OrgSchema) -> list[str]:
    """The problems found, or [] (also when Salesforce cannot be reached:
    then a warning is logged and the check happens on the next start)."""
    try:
        describes = {obj: schema.describe(obj) for obj in field_map.objects}
    except SalesforceFailure as exc:
        log.warning("field_map.unchecked", reason=str(exc))
        return []
    return check_against_describe(field_map, describes)
