"""Salesforce Outbound Messages: parsing and the exact acknowledgement
(docs/salesforce.md#outbound-messages). Pure functions, no I/O.

defusedxml refuses DTDs, entity declarations and external references, so
billion-laughs and XXE payloads fail before any expansion happens.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

SOAPENV = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND = "http://soap.sforce.com/2005/09/outbound"
SOBJECT = "urn:sobject.enterprise.soap.sforce.com"
XSI = "http://www.w3.org/2001/XMLSchema-instance"

MAX_NOTIFICATIONS = 100

ACK = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
    ' xmlns:xsd="http://www.w3.org/2001/XMLSchema"'
    ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
    " <soapenv:Body>\n"
    '  <notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">\n'
    "   <Ack>true</Ack>\n"
    "  </notificationsResponse>\n"
    " </soapenv:Body>\n"
    "</soapenv:Envelope>\n"
)


def fault(message: str, code: str = "soapenv:Client") -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">\n'
        " <soapenv:Body>\n"
        "  <soapenv:Fault>\n"
        f"   <faultcode>{escape(code)}</faultcode>\n"
        f"   <faultstring>{escape(message)}</faultstring>\n"
        "  </soapenv:Fault>\n"
        " </soapenv:Body>\n"
        "</soapenv:Envelope>\n"
    )


class OutboundMessageError(ValueError):
    """The body is not an Outbound Message we can accept."""


@dataclass(frozen=True)
class Notification:
    notification_id: str
    object_type: str
    record_id: str
    fields: dict[str, str | None]


@dataclass(frozen=True)
class OutboundMessage:
    organization_id: str
    action_id: str | None
    session_id: str | None
    enterprise_url: str | None
    partner_url: str | None
    notifications: list[Notification] = field(default_factory=list)


def _text(parent: Element, name: str) -> str | None:
    el = parent.find(f"{{{OUTBOUND}}}{name}")
    if el is None or el.get(f"{{{XSI}}}nil") == "true":
        return None
    return (el.text or "").strip() or None


def _parse_notification(el: Element) -> Notification:
    notification_id = _text(el, "Id")
    sobject = el.find(f"{{{OUTBOUND}}}sObject")
    if not notification_id or sobject is None:
        raise OutboundMessageError("Notification without Id or sObject")
    xsi_type = sobject.get(f"{{{XSI}}}type") or ""
    object_type = xsi_type.rpartition(":")[2]
    if not object_type.replace("_", "").isalnum():
        raise OutboundMessageError("sObject without a valid xsi:type")
    fields: dict[str, str | None] = {}
    for child in sobject:
        if not child.tag.startswith(f"{{{SOBJECT}}}"):
            continue
        name = child.tag.split("}", 1)[1]
        nil = child.get(f"{{{XSI}}}nil") == "true"
        fields[name] = None if nil else (child.text or "")
    record_id = fields.pop("Id", None)
    if not record_id:
        raise OutboundMessageError("sObject without sf:Id")
    return Notification(notification_id, object_type, record_id, fields)


def parse_outbound_message(body: bytes) -> OutboundMessage:
    try:
        root = SafeET.fromstring(body, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise OutboundMessageError(f"forbidden XML construct: {type(exc).__name__}") from None
    except SafeET.ParseError as exc:
        raise OutboundMessageError(f"malformed XML: {exc}") from None
    if root.tag != f"{{{SOAPENV}}}Envelope":
        raise OutboundMessageError("not a SOAP 1.1 envelope")
    notifications = root.find(f"{{{SOAPENV}}}Body/{{{OUTBOUND}}}notifications")
    if notifications is None:
        raise OutboundMessageError("no notifications element")
    org_id = _text(notifications, "OrganizationId")
    if not org_id:
        raise OutboundMessageError("no OrganizationId")
    items = notifications.findall(f"{{{OUTBOUND}}}Notification")
    if not 1 <= len(items) <= MAX_NOTIFICATIONS:
        raise OutboundMessageError(f"{len(items)} notifications; expected 1 to {MAX_NOTIFICATIONS}")
    return OutboundMessage(
        organization_id=org_id,
        action_id=_text(notifications, "ActionId"),
        session_id=_text(notifications, "SessionId"),
        enterprise_url=_text(notifications, "EnterpriseUrl"),
        partner_url=_text(notifications, "PartnerUrl"),
        notifications=[_parse_notification(n) for n in items],
    )

