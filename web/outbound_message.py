"""POST /salesforce/outbound-message/<token>: Salesforce Outbound Messages (SOAP).

Salesforce cannot sign an Outbound Message, and the org id it carries is
semi-public, so the sender is proven by the endpoint's URL: its last part
is SALESFORCE_OUTBOUND_TOKEN (docs/salesforce.md#authenticating-the-sender).
A wrong or missing token is answered like any unknown URL (404) before the
body is read; then the source network (SALESFORCE_ALLOWED_NETWORKS), the
content type, XML safety and the org are checked, the notifications are
deduplicated on their Id and handed to the workers' intake task (which
makes their jobs), and only then is the whole message acknowledged. Where
SALESFORCE_OUTBOUND_FIELDS declares what an object's message sends, the
declared fields' values go with each job (kept in Redis 24 h at most),
which then needs no read of its record (crm_enrich/flow/record.py);
otherwise the values are not used and every job reads its record from
Salesforce. While SALESFORCE_INGEST is cdc, change events make the jobs,
and a message is acknowledged and dropped.
"""
from __future__ import annotations

import hmac
import ipaddress

from flask import Blueprint, Response, abort, request
from werkzeug.exceptions import RequestEntityTooLarge

from crm_enrich import keys
from crm_enrich.flow.intake import InboundRecord, QueueUnavailable, forward_records, ignore_records
from crm_enrich.logs import log
from crm_enrich.salesforce.ids import same_org
from crm_enrich.salesforce.outbound_message import (
    ACK,
    OutboundMessageError,
    declared_values,
    fault,
    parse_outbound_message,
)
from crm_enrich.settings import Settings
from web.context import context

bp = Blueprint("outbound_message", __name__)

XML = "text/xml; charset=utf-8"
SOAP_TYPES = frozenset({"text/xml", "application/soap+xml"})


def _fault(status: int, message: str, code: str = "soapenv:Client") -> Response:
    return Response(fault(message, code), status=status, content_type=XML)


def _from_allowed_network(settings: Settings) -> bool:
    networks = settings.allowed_networks
    if networks is None:
        return True
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    return any(address in network for network in networks)


@bp.post("/salesforce/outbound-message/<token>")
def receive(token: str):
    settings = context().settings
    if (request.content_length or 0) > settings.max_body_bytes:
        return _fault(413, "message too large")
    if not hmac.compare_digest(token.encode(), settings.salesforce_outbound_token.encode()):
        log.warning("outbound_message.unknown_token")
        abort(404)
    if not _from_allowed_network(settings):
        log.warning("outbound_message.network_refused", client=request.remote_addr)
        return _fault(403, "source address not allowed")
    if request.mimetype not in SOAP_TYPES:
        return _fault(415, "an Outbound Message is text/xml")
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:
        return _fault(413, "message too large")
    try:
        message = parse_outbound_message(body)
    except OutboundMessageError as exc:
        log.warning("outbound_message.refused", reason=str(exc))
        return _fault(400, str(exc))
    if not same_org(message.organization_id, settings.salesforce_org_id):
        log.warning("outbound_message.wrong_org", org_id=message.organization_id)
        return _fault(403, "unknown organization")

    if settings.salesforce_ingest == "cdc":
        # Change events make the jobs: a Flow left sending Outbound Messages
        # would make every record's job twice. Acknowledged (or Salesforce
        # retries it for 24 h), counted and dropped.
        ignore_records(context().store, "outbound_message", "ingest_is_cdc", len(message.notifications))
        log.warning("outbound_message.ignored", notifications=len(message.notifications),
                    reason="SALESFORCE_INGEST is cdc: deactivate the Flows that send Outbound Messages")
        return Response(ACK, status=200, content_type=XML)

    declared = settings.outbound_fields
    records = [
        InboundRecord(
            dedupe_key=keys.outbound_notification(n.notification_id),
            object_type=n.object_type,
            record_id=n.record_id,  # Outbound Messages always carry 18-character ids
            fields_sent=tuple(n.fields),
            source="outbound_message",
            values=declared_values(n, declared[n.object_type]) if n.object_type in declared else None,
        )
        for n in message.notifications
    ]
    try:
        result = forward_records(context().store, context().forward_records, records)
    except QueueUnavailable:
        # No ACK: Salesforce keeps the message and retries it.
        return _fault(503, "temporarily unable to queue; retry", code="soapenv:Server")
    log.info("outbound_message.acked", notifications=len(records),
             forwarded=result.forwarded, duplicates=result.duplicates)
    return Response(ACK, status=200, content_type=XML)
