"""The change events' Avro shape and the decoding of their field bitmaps."""
import io

import fastavro
import pytest

from crm_enrich.salesforce.pubsub.schemas import change_event_schema, field_bitmaps, field_names

CONTACT = change_event_schema("Contact", [("Id", "id"), ("FirstName", "string"), ("LastName", "string"),
                                          ("Email", "email"), ("Title", "string"), ("CreatedDate", "datetime")])


def test_schema_has_the_header_first_then_nullable_fields_and_a_compound_name():
    names = [f["name"] for f in CONTACT["fields"]]
    assert names == ["ChangeEventHeader", "Id", "Name", "Email", "Title", "CreatedDate"]
    assert CONTACT["name"] == "ContactChangeEvent"
    title = CONTACT["fields"][4]
    assert title["type"] == ["null", "string"] and title["default"] is None
    parsed = fastavro.parse_schema(CONTACT)  # a valid Avro schema
    assert parsed["name"] == "com.sforce.eventbus.ContactChangeEvent"


def test_top_level_bitmap_names_fields_by_position():
    # bit 3 = Email, bit 4 = Title (bit 0 is the header)
    assert field_names(["0x18"], CONTACT) == ["Email", "Title"]
    assert field_names([], CONTACT) == []


def test_nested_bitmap_names_the_parts_of_a_compound_field():
    # Name is top-level field 2; its parts are the object's FirstName(0), LastName(1)
    assert field_names(["0x8", "2-0x3"], CONTACT) == ["Email", "FirstName", "LastName"]


def test_bitmaps_round_trip():
    names = ["FirstName", "Title", "Id"]
    entries = field_bitmaps(names, CONTACT)
    assert entries == ["0x12", "2-0x1"]
    assert sorted(field_names(entries, CONTACT)) == sorted(names)


def test_a_bit_past_the_schema_is_refused():
    with pytest.raises(ValueError):
        field_names(["0x40"], CONTACT)
    with pytest.raises(ValueError):
        field_names(["3-0x1"], CONTACT)  # Email has no parts


def test_an_event_written_with_the_schema_reads_back():
    event = {"ChangeEventHeader": {
        "entityName": "Contact", "recordIds": ["003000000000001AAA"], "changeType": "CREATE",
        "changeOrigin": "", "transactionKey": "t1", "sequenceNumber": 1, "commitTimestamp": 1, "commitNumber": 1,
        "commitUser": "005000000000001AAA", "nulledFields": [], "diffFields": [],
        "changedFields": field_bitmaps(["Id", "LastName"], CONTACT)},
        "Id": "003000000000001AAA", "Name": {"FirstName": None, "LastName": "Lee"},
        "Email": None, "Title": None, "CreatedDate": 1}
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(CONTACT), event)
    decoded = fastavro.schemaless_reader(io.BytesIO(buf.getvalue()), fastavro.parse_schema(CONTACT), None)
    assert decoded["Name"]["LastName"] == "Lee"
    assert field_names(decoded["ChangeEventHeader"]["changedFields"], CONTACT) == ["Id", "LastName"]
