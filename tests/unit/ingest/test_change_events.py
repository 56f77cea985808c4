"""Change events as intake: the changedFields bitmap, which changes make
jobs, the records (and dedupe keys) an event makes, and a CREATE's values."""
from __future__ import annotations

import pytest

from crm_enrich.ingest.change_events import (
    ChangeHeader,
    changed_field_names,
    created_values,
    inbound_records,
    is_own_change,
    makes_jobs,
)

NAME = {"type": "record", "name": "Name", "fields": [
    {"name": "Salutation", "type": ["null", "string"]},
    {"name": "FirstName", "type": ["null", "string"]},
    {"name": "LastName", "type": ["null", "string"]}]}
# Shaped as Salesforce's ContactChangeEvent schema: the header first, a
# compound Name, then the plain fields.
SCHEMA = {"type": "record", "name": "ContactChangeEvent", "fields": [
    {"name": "ChangeEventHeader", "type": {"type": "record", "name": "ChangeEventHeader", "fields": []}},
    {"name": "Name", "type": ["null", NAME]},
    {"name": "AccountId", "type": ["null", "string"]},
    {"name": "Email", "type": ["null", "string"]},
    {"name": "Title", "type": ["null", "string"]},
    {"name": "LastModifiedDate", "type": ["null", "long"]}]}
OUR_USER, PERSON = "005000000000001AAA", "005000000000002AAA"


def header(change_type="CREATE", entity="Contact", ids=("003000000000001",), user=PERSON, changed=()):
    return ChangeHeader.from_payload({"ChangeEventHeader": {
        "entityName": entity, "recordIds": list(ids), "changeType": change_type, "commitUser": user,
        "changedFields": list(changed)}, "Email": "someone@example.com"})


def test_the_bitmap_names_top_level_fields_by_their_position_from_the_lowest_bit():
    # 0x28: bits 3 and 5 -> Email and LastModifiedDate
    assert changed_field_names(SCHEMA, ["0x28"]) == {"Email", "LastModifiedDate"}


def test_a_compound_fields_bitmap_names_its_own_fields():
    # Name (position 1) changed: its bitmap 0x4 is bit 2, LastName.
    assert changed_field_names(SCHEMA, ["0x2", "1-0x4"]) == {"Name", "LastName"}


def test_bits_past_the_schema_and_unknown_compound_fields_name_nothing():
    assert changed_field_names(SCHEMA, ["0x100", "4-0x1", "9-0x1"]) == set()


def test_creates_of_our_objects_make_jobs_and_other_objects_or_deletes_do_not():
    assert makes_jobs(header(), SCHEMA, take_updates=False, integration_user_id=OUR_USER)
    assert makes_jobs(header("GAP_CREATE"), SCHEMA, False, OUR_USER)
    assert makes_jobs(header("GAP_OVERFLOW"), SCHEMA, False, OUR_USER)
    assert not makes_jobs(header(entity="Opportunity"), SCHEMA, False, OUR_USER)
    assert not makes_jobs(header("DELETE"), SCHEMA, True, OUR_USER)
    assert not makes_jobs(header("UNDELETE"), SCHEMA, True, OUR_USER)


def test_our_own_changes_never_make_jobs_15_or_18_characters():
    ours = header("UPDATE", user=OUR_USER[:15], changed=["0x8"])
    assert is_own_change(ours, OUR_USER)
    assert not makes_jobs(ours, SCHEMA, take_updates=True, integration_user_id=OUR_USER)
    assert not makes_jobs(header(user=OUR_USER), SCHEMA, True, OUR_USER)
    assert not is_own_change(header(user=None), OUR_USER)


@pytest.mark.parametrize(("changed", "wanted"), [
    (["0x8"], True),            # Email: an input field
    (["0x2", "1-0x2"], True),   # Name.FirstName
    (["0x10"], False),          # Title: a field we write, not one we read to find the person
    (["0x20"], False),          # LastModifiedDate only
])
def test_updates_make_jobs_only_by_setting_and_only_for_input_fields(changed, wanted):
    update = header("UPDATE", changed=changed)
    assert makes_jobs(update, SCHEMA, take_updates=True, integration_user_id=OUR_USER) is wanted
    assert not makes_jobs(update, SCHEMA, take_updates=False, integration_user_id=OUR_USER)


def test_a_gap_update_tells_no_fields_and_reads_when_updates_are_taken():
    assert makes_jobs(header("GAP_UPDATE"), SCHEMA, take_updates=True, integration_user_id=OUR_USER)
    assert not makes_jobs(header("GAP_UPDATE"), SCHEMA, take_updates=False, integration_user_id=OUR_USER)


def test_one_record_per_id_keyed_on_the_replay_id_and_the_18_character_id_without_values():
    event = header(ids=("003000000000001", "003000000000001AAA", "003000000000002", "not-an-id"))
    records = inbound_records(event, b"\x00\x01")
    assert [r.record_id for r in records] == ["003000000000001AAA", "003000000000002AAA"]
    assert [r.dedupe_key for r in records] == ["cdc:0001:003000000000001AAA", "cdc:0001:003000000000002AAA"]
    assert {(r.source, r.object_type, r.values) for r in records} == {("cdc", "Contact", None)}
    # The same event again (a redelivery) makes the same keys; another event other keys.
    assert [r.dedupe_key for r in inbound_records(event, b"\x00\x01")] == [r.dedupe_key for r in records]
    assert inbound_records(event, b"\x00\x02")[0].dedupe_key != records[0].dedupe_key


def test_a_creates_values_are_the_wanted_fields_it_has_person_names_by_their_parts():
    event = ChangeHeader.from_payload({"ChangeEventHeader": {
        "entityName": "Contact", "recordIds": ["003000000000001AAA", "003000000000002AAA"], "changeType": "CREATE",
        "commitUser": PERSON, "commitTimestamp": 1_780_000_000_250}})
    payload = {"Name": {"Salutation": None, "FirstName": "Ada", "LastName": "Lovelace"}, "AccountId": None,
               "Email": "ada@example.com", "Title": None, "LastModifiedDate": 1_780_000_000_250}
    wanted = ["FirstName", "LastName", "Email", "Title", "AccountId", "LastModifiedDate", "Formula__c"]
    values = created_values(event, payload, SCHEMA, wanted)
    # A field the event does not carry (a formula) is left out: its job reads.
    assert values == {"FirstName": "Ada", "LastName": "Lovelace", "Email": "ada@example.com", "Title": None,
                      "AccountId": None, "LastModifiedDate": 1_780_000_000_250}
    records = inbound_records(event, b"\x00\x07", values)
    # Each record named gets them, with its own id, as of the commit.
    assert [r.values["Id"] for r in records] == ["003000000000001AAA", "003000000000002AAA"]
    assert {r.received_at for r in records} == {1_780_000_000.25}
    # Other changes carry only what changed (or nothing): their jobs read.
    for change in ("UPDATE", "GAP_CREATE", "GAP_OVERFLOW"):
        assert created_values(header(change), payload, SCHEMA, wanted) is None
