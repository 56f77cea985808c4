"""Change Data Capture events as intake: which changes make jobs, and the
InboundRecords they make. Plain functions over decoded events (docs/
salesforce.md#change-data-capture); the stream is the subscriber's.

A change event's payload, decoded with its Avro schema, holds a
ChangeEventHeader (entityName, recordIds, changeType, commitUser,
changedFields, ...) and the record's fields. A CREATE holds every field
the object's change events carry, null when empty: its job starts from
those values (the ones it reads, kept like an Outbound Message's declared
values: in the job's provider data, 24 h at most) instead of reading the
record, if they cover what it needs. Other changes carry only what
changed, gap and overflow events nothing: their jobs read.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from crm_enrich import keys
from crm_enrich.flow.intake import InboundRecord
from crm_enrich.flow.record import IDENTITY_FIELDS
from crm_enrich.salesforce.ids import OBJECTS, is_record_id, to_id18
from crm_enrich.salesforce.outbound_message import SentValue
from crm_enrich.salesforce.pubsub.schemas import compound_fields, field_names

SOURCE = "cdc"
HEADER = "ChangeEventHeader"
# Gap events (Salesforce could not build the full event) and overflow
# events (a transaction too large to describe) carry ids and no fields:
# their jobs read the records, which every job does anyway.
GAP_CREATE, GAP_UPDATE, GAP_OVERFLOW = "GAP_CREATE", "GAP_UPDATE", "GAP_OVERFLOW"
# The fields we read to find the person or company: an UPDATE of one of
# them is worth a job (SALESFORCE_CDC_UPDATES), any other is not.
INPUT_FIELDS = {obj: frozenset(f for f in fields if "." not in f) for obj, fields in IDENTITY_FIELDS.items()}


@dataclass(frozen=True)
class ChangeHeader:
    entity: str
    record_ids: tuple[str, ...]
    change_type: str
    commit_user: str | None
    changed_fields: tuple[str, ...]   # the bitmaps as sent ("0x...", "<pos>-0x...")
    committed_at: float | None = None  # commitTimestamp, in seconds

    @classmethod
    def from_payload(cls, payload: dict) -> ChangeHeader:
        header = payload.get(HEADER) or {}
        return cls(entity=str(header.get("entityName") or ""),
                   record_ids=tuple(str(rid) for rid in header.get("recordIds") or ()),
                   change_type=str(header.get("changeType") or ""),
                   commit_user=header.get("commitUser") or None,
                   changed_fields=tuple(header.get("changedFields") or ()),
                   committed_at=header["commitTimestamp"] / 1000 if header.get("commitTimestamp") else None)


def changed_field_names(schema: dict, bitmaps: Iterable[str]) -> set[str]:
    """The fields a changedFields bitmap names (a compound field's parts by
    their own names); none when it names a field past the event's own
    schema, which Salesforce never sends: no job rather than a wrong one."""
    try:
        return set(field_names(bitmaps, schema))
    except (ValueError, IndexError):
        return set()


def is_own_change(header: ChangeHeader, integration_user_id: str | None) -> bool:
    """The change was made by our integration user: our write-back (never
    a job again, or every write would loop)."""
    return bool(integration_user_id and header.commit_user
                and header.commit_user[:15] == integration_user_id[:15])


def makes_jobs(header: ChangeHeader, schema: dict, take_updates: bool, integration_user_id: str | None) -> bool:
    """A CREATE (or a gap or overflow event for creations) of an object we
    enrich, not ours; with `take_updates` also an UPDATE of an input field
    (a gap UPDATE tells no fields: it reads)."""
    if header.entity not in OBJECTS or is_own_change(header, integration_user_id):
        return False
    if header.change_type in ("CREATE", GAP_CREATE, GAP_OVERFLOW):
        return True
    if not take_updates:
        return False
    if header.change_type == GAP_UPDATE:
        return True
    return (header.change_type == "UPDATE"
            and bool(changed_field_names(schema, header.changed_fields) & INPUT_FIELDS[header.entity]))


def created_values(header: ChangeHeader, payload: dict, schema: dict,
                   wanted: Iterable[str]) -> dict[str, SentValue] | None:
    """A CREATE's values of the `wanted` fields the event's schema has
    (a compound field's parts by their own names; a field the schema lacks,
    such as a formula, is left out, so its job reads); None for any other
    change."""
    if header.change_type != "CREATE":
        return None
    flat: dict[str, SentValue] = {}
    for spec in schema["fields"]:
        if spec["name"] == HEADER:
            continue
        value = payload.get(spec["name"])
        parts = compound_fields(spec)
        if parts is None:
            flat[spec["name"]] = value
        else:
            flat.update({part["name"]: (value or {}).get(part["name"]) for part in parts})
    return {name: flat[name] for name in wanted if name in flat}


def inbound_records(header: ChangeHeader, replay_id: bytes,
                    values: dict[str, SentValue] | None = None) -> list[InboundRecord]:
    """One InboundRecord per record the event names, deduplicated on the
    event's replay id and the record: a redelivery after a restart is the
    same event again, never a second job. `values` (a CREATE's) are as of
    the commit: a job's plan older than WRITEBACK_REREAD_AFTER_S (an event
    replayed after downtime) is read again before its write."""
    ids = dict.fromkeys(to_id18(rid) for rid in header.record_ids if is_record_id(rid))
    return [InboundRecord(dedupe_key=keys.cdc_event(replay_id, rid), object_type=header.entity,
                          record_id=rid, source=SOURCE,
                          values=None if values is None else {**values, "Id": rid},
                          received_at=header.committed_at) for rid in ids]
