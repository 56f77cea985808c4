"""Outbound Message bodies shaped as Salesforce sends them (docs/salesforce.md#message-format)."""
from __future__ import annotations

ORG_18 = "00D5g000004XyZaEAK"
ORG_15 = ORG_18[:15]


def notification(notification_id: str, record_id: str, fields: dict[str, str | None] | None = None,
                 object_type: str = "Contact") -> str:
    children = [f"<sf:Id>{record_id}</sf:Id>"]
    for name, value in (fields or {}).items():
        children.append(f'<sf:{name} xsi:nil="true"/>' if value is None else f"<sf:{name}>{value}</sf:{name}>")
    return (
        f"<Notification><Id>{notification_id}</Id>"
        f'<sObject xsi:type="sf:{object_type}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">'
        + "".join(children) + "</sObject></Notification>"
    )


def envelope(notifications: list[str], org_id: str = ORG_18, session_id: str | None = None,
             prolog: str = "") -> bytes:
    session = f"<SessionId>{session_id}</SessionId>" if session_id else '<SessionId xsi:nil="true"/>'
    return (
        '<?xml version="1.0" encoding="UTF-8"?>' + prolog +
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
        ' xmlns:xsd="http://www.w3.org/2001/XMLSchema"'
        ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
        '<notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
        f"<OrganizationId>{org_id}</OrganizationId><ActionId>04k5g000000AbCdAAE</ActionId>{session}"
        f"<EnterpriseUrl>https://acme.my.salesforce.com/services/Soap/c/59.0/{org_id[:15]}</EnterpriseUrl>"
        f"<PartnerUrl>https://acme.my.salesforce.com/services/Soap/u/59.0/{org_id[:15]}</PartnerUrl>"
        + "".join(notifications) +
        "</notifications></soapenv:Body></soapenv:Envelope>"
    ).encode()


ENTITY_DECLARATION = '<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
BILLION_LAUGHS = (
    '<!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10))
    + "]>"
)
