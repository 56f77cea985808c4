import pytest
from defusedxml.ElementTree import fromstring

from crm_enrich.salesforce.ids import same_org
from crm_enrich.salesforce.outbound_message import (
    ACK,
    Notification,
    OutboundMessageError,
    as_read,
    declared_values,
    fault,
    parse_outbound_message,
)
from tests.soap_samples import BILLION_LAUGHS, ENTITY_DECLARATION, ORG_15, ORG_18, envelope, notification


def test_one_notification_with_fields():
    body = envelope([notification("04l5g00000XyZ12AAB", "0035g00000QwErTAAB",
                                  {"Email": "dana@example.org", "FirstName": "Dana", "LastName": "Rivers"})])
    msg = parse_outbound_message(body)
    assert msg.organization_id == ORG_18
    assert msg.session_id is None
    (n,) = msg.notifications
    assert (n.notification_id, n.object_type, n.record_id) == ("04l5g00000XyZ12AAB", "Contact", "0035g00000QwErTAAB")
    assert n.fields == {"Email": "dana@example.org", "FirstName": "Dana", "LastName": "Rivers"}


def test_hundred_notifications():
    items = [notification(f"04l5g00000XyZ{i:03d}AB", f"0035g00000Qw{i:03d}AAB", {"LastName": f"N{i}"})
             for i in range(100)]
    msg = parse_outbound_message(envelope(items))
    assert len(msg.notifications) == 100
    assert msg.notifications[99].fields == {"LastName": "N99"}


def test_more_than_hundred_is_refused():
    items = [notification(f"04l{i:015d}", f"003{i:015d}") for i in range(101)]
    with pytest.raises(OutboundMessageError, match="101 notifications"):
        parse_outbound_message(envelope(items))


def test_missing_fields_are_absent_and_nil_is_none():
    msg = parse_outbound_message(envelope([notification("04l1", "0035g00000QwErUAAR",
                                                         {"LastName": "Okafor", "Email": None})]))
    fields = msg.notifications[0].fields
    assert fields == {"LastName": "Okafor", "Email": None}
    assert "FirstName" not in fields


def test_session_id_present():
    msg = parse_outbound_message(envelope([notification("04l1", "003a")], session_id="00Dx!AQ4.secret"))
    assert msg.session_id == "00Dx!AQ4.secret"


@pytest.mark.parametrize("org", [ORG_15, ORG_18])
def test_org_ids_15_or_18(org):
    msg = parse_outbound_message(envelope([notification("04l1", "003a")], org_id=org))
    assert same_org(msg.organization_id, ORG_18)
    assert same_org(msg.organization_id, ORG_15)


def test_other_org_does_not_match():
    assert not same_org("00D5g000004XyZbEAK", ORG_18)
    assert not same_org("00D5g", ORG_18)


@pytest.mark.parametrize("prolog", [ENTITY_DECLARATION, BILLION_LAUGHS])
def test_entity_tricks_are_refused(prolog):
    with pytest.raises(OutboundMessageError, match="forbidden XML"):
        parse_outbound_message(envelope([notification("04l1", "003a")], prolog=prolog))


@pytest.mark.parametrize("body", [b"", b"<not-closed", b"{}", b"<a/>"])
def test_malformed_bodies_are_refused(body):
    with pytest.raises(OutboundMessageError):
        parse_outbound_message(body)


def test_notification_without_record_id_is_refused():
    bad = notification("04l1", "003a").replace("<sf:Id>003a</sf:Id>", "")
    with pytest.raises(OutboundMessageError, match="sf:Id"):
        parse_outbound_message(envelope([bad]))


def test_ack_is_exactly_the_documented_envelope():
    root = fromstring(ACK.encode())
    assert root.tag == "{http://schemas.xmlsoap.org/soap/envelope/}Envelope"
    ack = root.find("{http://schemas.xmlsoap.org/soap/envelope/}Body/"
                    "{http://soap.sforce.com/2005/09/outbound}notificationsResponse/"
                    "{http://soap.sforce.com/2005/09/outbound}Ack")
    assert ack is not None and ack.text == "true"
    assert ACK.startswith('<?xml version="1.0" encoding="UTF-8"?>')


def test_fault_escapes_its_message():
    body = fault("bad <org> & co")
    assert "bad &lt;org&gt; &amp; co" in body
    assert fromstring(body.encode()) is not None


def test_declared_values_name_every_declared_field_and_ignore_the_rest():
    n = Notification("04l1", "Contact", "0035g00000QwErUAAR", {"LastName": "Okafor", "Email": None, "Secret__c": "x"})
    assert declared_values(n, frozenset({"LastName", "Email", "Title"})) == {
        "Id": "0035g00000QwErUAAR", "LastName": "Okafor", "Email": None, "Title": None}   # absent: null


def test_as_read_gives_values_the_types_a_read_gives_them():
    types = {"NumberOfEmployees": "int", "Total_Funding__c": "currency", "HasOptedOutOfEmail": "boolean",
             "CreatedDate": "datetime", "Name": "string"}
    describe = {"fields": [{"name": name, "type": kind} for name, kind in types.items()]}
    sent = {"NumberOfEmployees": "250", "Total_Funding__c": "45000000.0", "HasOptedOutOfEmail": "false",
            "CreatedDate": "2026-11-20T09:00:00.000Z", "Name": "0042", "Industry": None, "Weird": "12"}
    assert as_read(sent, describe) == {
        "NumberOfEmployees": 250, "Total_Funding__c": 45000000.0, "HasOptedOutOfEmail": False,
        "CreatedDate": "2026-11-20T09:00:00.000+0000", "Name": "0042", "Industry": None, "Weird": "12"}
    assert as_read({"NumberOfEmployees": "many"}, describe) == {"NumberOfEmployees": "many"}   # kept as sent


def test_as_read_gives_a_change_events_avro_values_the_types_a_read_gives_them():
    describe = {"fields": [{"name": "CreatedDate", "type": "datetime"}, {"name": "Birthdate", "type": "date"},
                           {"name": "NumberOfEmployees", "type": "int"}, {"name": "DoNotCall", "type": "boolean"}]}
    sent = {"CreatedDate": 1_795_165_200_042, "Birthdate": 20_000, "NumberOfEmployees": 250, "DoNotCall": True}
    assert as_read(sent, describe) == {"CreatedDate": "2026-11-20T09:00:00.042+0000", "Birthdate": "2024-10-04",
                                       "NumberOfEmployees": 250, "DoNotCall": True}
