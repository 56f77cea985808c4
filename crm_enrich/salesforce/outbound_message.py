"""Salesforce Outbound Messages: parsing and the exact acknowledgement
(docs/salesforce.md#outbound-messages). Pure functions, no I/O.

Parsed with lxml, hardened to the same policy defusedxml applied before
(`forbid_dtd`): entities are never resolved, nothing is fetched from the
network, no DTD is loaded, and a document with any DTD at all is refused,
so billion-laughs and XXE payloads fail without any expansion. For a
100-notification message lxml's parse takes about a quarter of
defusedxml-over-ElementTree's (0.22 ms against 0.82 ms; with the walk
below, 0.9 ms against 1.3 ms). defusedxml.lxml is deprecated, so the
hardening is lxml's own parser options.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from xml.sax.saxutils import escape

from lxml import etree

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


_FIELD_PREFIX = f"{{{SOBJECT}}}"
_FIELD_AT = len(_FIELD_PREFIX)   # where the field's name starts in "{namespace}Name"
_NIL, _TYPE = f"{{{XSI}}}nil", f"{{{XSI}}}type"
_ID, _SOBJECT, _NOTIFICATION = f"{{{OUTBOUND}}}Id", f"{{{OUTBOUND}}}sObject", f"{{{OUTBOUND}}}Notification"
Element = Any  # an lxml element (lxml ships no public name for its type)


def _safe_parser() -> etree.XMLParser:
    """A new parser per message: lxml parsers are not to be shared between threads."""
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                           huge_tree=False, remove_comments=True, remove_pis=True)


def _text(parent: Element, name: str) -> str | None:
    el = parent.find(f"{{{OUTBOUND}}}{name}")
    if el is None or el.get(f"{{{XSI}}}nil") == "true":
        return None
    return (el.text or "").strip() or None


def _field_name(tag: str) -> str | None:
    """A child of the sObject: its field name, or None when it is not in the
    sObject namespace (ignored). Memoised: a message repeats the same few
    names a hundred times."""
    name = _FIELD_NAMES.get(tag)
    if name is None and tag not in _FIELD_NAMES:
        name = tag[_FIELD_AT:] if isinstance(tag, str) and tag.startswith(_FIELD_PREFIX) else None
        if len(_FIELD_NAMES) < 10_000:   # bounded: a hostile sender could invent names
            _FIELD_NAMES[tag] = name
    return name


_FIELD_NAMES: dict[str, str | None] = {}


@functools.lru_cache(maxsize=256)
def _object_type(xsi_type: str) -> str:
    """"sf:Contact" -> "Contact"; raises for anything that is not a name."""
    object_type = xsi_type.rpartition(":")[2]
    if not object_type.replace("_", "").isalnum():
        raise OutboundMessageError("sObject without a valid xsi:type")
    return object_type


def _parse_notification(el: Element) -> Notification:
    # Plain iteration over the children, comparing tags: lxml's find() goes
    # through a path parser, and iterchildren() with a tag filter costs
    # about as much again, which at 100 notifications a message was twice
    # the cost of the parse itself.
    notification_id, sobject = None, None
    for child in el:
        tag = child.tag
        if tag == _ID:
            notification_id = (child.text or "").strip() or None   # a nil element has no text
        elif tag == _SOBJECT:
            sobject = child
    if not notification_id or sobject is None:
        raise OutboundMessageError("Notification without Id or sObject")
    object_type = _object_type(sobject.get(_TYPE) or "")
    fields: dict[str, str | None] = {}
    for child in sobject:
        name = _field_name(child.tag)
        if name is not None:
            text = child.text
            # Only an element without text can be nil: the attribute lookup
            # is skipped for the rest.
            fields[name] = text if text is not None else (None if child.get(_NIL) == "true" else "")
    record_id = fields.pop("Id", None)
    if not record_id:
        raise OutboundMessageError("sObject without sf:Id")
    return Notification(notification_id, object_type, record_id, fields)


_NUMBERS = frozenset({"int", "double", "currency", "percent"})
_EPOCH = date(1970, 1, 1)
# A field's value as a message or a change event sent it.
SentValue = str | int | float | bool | None


def as_read(values: dict, describe: dict | None) -> dict:
    """A message's field values (SOAP text) or a change event's (Avro) as
    the REST API gives them: a number, a boolean, a date-time in its
    "+0000" form, a date (so a value compares and hashes as the same value
    read would). Avro sends date-times as epoch milliseconds and dates as
    epoch days. Pure."""
    types = {f["name"]: f.get("type") for f in (describe or {}).get("fields", [])}
    out = dict(values)
    for name, value in values.items():
        kind = types.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and kind in ("datetime", "date"):
            out[name] = _from_epoch(value, kind)
        if not isinstance(value, str):
            continue
        try:
            if kind in _NUMBERS:
                out[name] = int(float(value)) if kind == "int" else float(value)
            elif kind == "boolean":
                out[name] = value.strip().lower() == "true"
            elif kind == "datetime" and value.endswith("Z"):
                out[name] = value[:-1] + "+0000"
        except ValueError:
            pass   # kept as sent: the field map's rules see what Salesforce said
    return out


def _from_epoch(value: int, kind: str) -> str:
    if kind == "date":
        return (_EPOCH + timedelta(days=value)).isoformat()
    at = datetime.fromtimestamp(value / 1000, UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value % 1000:03d}+0000"


def declared_values(notification: Notification, declared: frozenset[str]) -> dict[str, str | None]:
    """The declared fields' values: one the message left out is null
    (Salesforce sends no element for an empty field); undeclared ones are
    ignored. Pure."""
    return {"Id": notification.record_id, **{name: notification.fields.get(name) for name in declared}}


def parse_outbound_message(body: bytes) -> OutboundMessage:
    try:
        root = etree.fromstring(body, _safe_parser())
    except etree.XMLSyntaxError as exc:
        if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
            raise OutboundMessageError("forbidden XML construct: DTD") from None
        raise OutboundMessageError(f"malformed XML: {exc}") from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise OutboundMessageError("forbidden XML construct: DTD")
    if root.tag != f"{{{SOAPENV}}}Envelope":
        raise OutboundMessageError("not a SOAP 1.1 envelope")
    notifications = root.find(f"{{{SOAPENV}}}Body/{{{OUTBOUND}}}notifications")
    if notifications is None:
        raise OutboundMessageError("no notifications element")
    org_id = _text(notifications, "OrganizationId")
    if not org_id:
        raise OutboundMessageError("no OrganizationId")
    items = [child for child in notifications if child.tag == _NOTIFICATION]
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

