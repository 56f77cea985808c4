"""POST /salesforce/outbound-message: Salesforce Outbound Messages (SOAP).

Verify (size, XML safety, org), deduplicate on the notification Id,
enqueue, and only then acknowledge the whole message.
"""
from __future__ import annotations

from flask import Blueprint, Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from crm_enrich.flow.intake import InboundRecord, QueueUnavailable, accept_records
from crm_enrich.logs import log
from crm_enrich.salesforce.ids import same_org
from crm_enrich.salesforce.outbound_message import ACK, OutboundMessageError, fault, parse_outbound_message
from web.context import context

bp = Blueprint("outbound_message", __name__)

XML = "text/xml; charset=utf-8"


def _fault(status: int, message: str, code: str = "soapenv:Client") -> Response:
    return Response(fault(message, code), status=status, content_type=XML)


@bp.post("/salesforce/outbound-message")
def receive():
    settings = context().settings
    if (request.content_length or 0) > settings.max_body_bytes:
        return _fault(413, "message too large")
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

    records = [
        InboundRecord(
            dedupe_key=f"om:{n.notification_id}",
            object_type=n.object_type,
            record_id=n.record_id,
            fields=n.fields,
            source="outbound_message",
        )
        for n in message.notifications
    ]
    try:
        result = accept_records(context().store, context().enqueue_jobs, records)
    except QueueUnavailable:
        # No ACK: Salesforce keeps the message and retries it.
        return _fault(503, "temporarily unable to queue; retry", code="soapenv:Server")
    log.info("outbound_message.acked", notifications=len(records),
             accepted=len(result.accepted), duplicates=len(result.duplicates))
    return Response(ACK, status=200, content_type=XML)
