"""POST /salesforce/events: record-creation events as JSON, for orgs that
use a Flow HTTP Callout or Apex instead of Outbound Messages.

Authenticated by Standard Webhooks signatures (webhook-id is the
idempotency key) or, for Flows that cannot sign, the same secret as a bearer
token. Record values in the body are never used: each job reads its
record from Salesforce.
"""
from __future__ import annotations

import hmac
import json

from flask import Blueprint, jsonify, request
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from werkzeug.exceptions import RequestEntityTooLarge

from crm_enrich import keys
from crm_enrich.flow.intake import InboundRecord, QueueUnavailable, accept_records
from crm_enrich.logs import log
from crm_enrich.salesforce.ids import OBJECTS, SF_ID, same_org, to_id18
from web.context import context

bp = Blueprint("events", __name__)

MAX_RECORDS = 200


def _error(status: int, message: str):
    return jsonify({"error": message}), status


def _authenticate(body: bytes, secret: str) -> tuple[str | None, str | None]:
    """(webhook-id or None for bearer, error or None)."""
    if request.headers.get("webhook-signature"):
        try:
            Webhook(secret).verify(body, dict(request.headers), json_parse=False)
        except (WebhookVerificationError, ValueError) as exc:
            return None, f"signature rejected: {exc}"
        return request.headers["webhook-id"], None
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), secret.encode()):
        return None, None
    return None, "missing or invalid credentials"


def _validate(payload) -> tuple[str, list[dict]] | str:
    if not isinstance(payload, dict):
        return "body must be a JSON object"
    object_type = payload.get("object")
    if object_type not in OBJECTS:
        return f"object must be one of {sorted(OBJECTS)}"
    records = payload.get("records")
    if not isinstance(records, list) or not 1 <= len(records) <= MAX_RECORDS:
        return f"records must be a list of 1 to {MAX_RECORDS} objects"
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or not isinstance(rec.get("Id"), str) or not SF_ID.match(rec["Id"]):
            return f"records[{i}].Id must be a 15- or 18-character Salesforce id"
        if any(not isinstance(v, (str, int, float, bool, type(None))) for v in rec.values()):
            return f"records[{i}] values must be scalars"
    return object_type, records


@bp.post("/salesforce/events")
def receive():
    settings = context().settings
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:
        return _error(413, "body too large")
    webhook_id, auth_error = _authenticate(body, settings.salesforce_webhook_secret)
    if auth_error:
        return _error(401, auth_error)
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _error(400, "body is not valid JSON")
    checked = _validate(payload)
    if isinstance(checked, str):
        return _error(400, checked)
    object_type, records = checked
    event_id = payload.get("eventId")
    if event_id is not None and not (isinstance(event_id, str) and 1 <= len(event_id) <= 255):
        return _error(400, "eventId must be a string of 1 to 255 characters")
    org_id = payload.get("orgId")
    if org_id is not None and not (isinstance(org_id, str) and same_org(org_id, settings.salesforce_org_id)):
        return _error(403, "unknown organization")

    # Signed events are idempotent per webhook-id; unsigned ones per eventId if
    # the Flow sends one, else per record (a record is created only once).
    # Ids in their 18-character form (a Flow may send 15): the batched read
    # finds records by the Id Salesforce returns, and the same record sent
    # both ways is one record to deduplicate.
    event_key = webhook_id or payload.get("eventId")
    inbound = []
    for rec in records:
        record_id = to_id18(rec["Id"])
        inbound.append(InboundRecord(
            dedupe_key=(keys.json_event(event_key, record_id) if event_key
                        else keys.record_created(object_type, record_id)),
            object_type=object_type,
            record_id=record_id,
            fields_sent=tuple(k for k in rec if k != "Id"),
            source="json_event",
        ))
    try:
        result = accept_records(context().store, context().enqueue_jobs, inbound)
    except QueueUnavailable:
        return _error(503, "temporarily unable to queue; retry")
    log.info("events.accepted", accepted=len(result.accepted), duplicates=len(result.duplicates))
    return jsonify({"accepted": len(result.accepted), "duplicates": len(result.duplicates),
                    "jobs": result.accepted}), 202
