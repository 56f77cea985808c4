"""The Avro shape of Salesforce's change events, and the decoding of their
field bitmaps.

A change event (e.g. ContactChangeEvent) is one Avro record: a
`ChangeEventHeader` record, then every field of the object as a nullable
union (null first, default null). Compound fields (a person's Name) are
nested records. docs/salesforce.md ("Change Data Capture over the Pub/Sub
API") says what of this Salesforce documents and what is inferred.

The bitmap fields of the header (changedFields, nulledFields, diffFields)
are lists of hex strings: "0x..." sets bit i for the event's i-th top-level
field (bit 0 is the header), "<i>-0x..." sets bit j for the j-th field of
the compound field at top-level position i. `field_names` turns them back
into field names, given the schema they were written with.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

# Salesforce field types (describe's `type`) as change events encode them.
# Date-times are epoch milliseconds; Inferred: dates are epoch days.
AVRO_TYPES: dict[str, str] = {
    "id": "string", "reference": "string", "string": "string", "textarea": "string", "email": "string",
    "phone": "string", "url": "string", "picklist": "string",
    "int": "int", "double": "double", "currency": "double", "boolean": "boolean",
    "datetime": "long", "date": "int",
}

# The compound fields change events nest: {compound: its parts, in order}.
# Salesforce also nests addresses; the objects we follow carry none we read.
PERSON_NAME_PARTS = ("Salutation", "FirstName", "LastName")

CHANGE_EVENT_HEADER = {
    "type": "record",
    "name": "ChangeEventHeader",
    "namespace": "com.sforce.eventbus",
    "fields": [
        {"name": "entityName", "type": "string"},
        {"name": "recordIds", "type": {"type": "array", "items": "string"}},
        {"name": "changeType", "type": {"type": "enum", "name": "ChangeType", "namespace": "com.sforce.eventbus",
                                        "symbols": ["CREATE", "UPDATE", "DELETE", "UNDELETE", "GAP_CREATE",
                                                    "GAP_UPDATE", "GAP_DELETE", "GAP_UNDELETE", "GAP_OVERFLOW",
                                                    "SNAPSHOT"]}},
        {"name": "changeOrigin", "type": "string"},
        {"name": "transactionKey", "type": "string"},
        {"name": "sequenceNumber", "type": "int"},
        {"name": "commitTimestamp", "type": "long"},
        {"name": "commitNumber", "type": "long"},
        {"name": "commitUser", "type": "string"},
        {"name": "nulledFields", "type": {"type": "array", "items": "string"}},
        {"name": "diffFields", "type": {"type": "array", "items": "string"}},
        {"name": "changedFields", "type": {"type": "array", "items": "string"}},
    ],
}


def _nullable(avro_type) -> dict:
    return {"type": ["null", avro_type], "default": None}


def change_event_schema(entity: str, fields: Iterable[tuple[str, str]]) -> dict:
    """The Avro schema of `entity`'s change event, from the object's
    (field name, Salesforce type) pairs in describe order. The person-name
    parts the object has (of Salutation, FirstName, LastName) become the
    compound field Name, at the place of the first of them."""
    fields = list(fields)
    name_parts = [(n, t) for n, t in fields if n in PERSON_NAME_PARTS]
    out: list[dict] = [{"name": "ChangeEventHeader", "type": CHANGE_EVENT_HEADER}]
    for name, sf_type in fields:
        if name in PERSON_NAME_PARTS:
            if name == name_parts[0][0]:
                out.append({"name": "Name", **_nullable({
                    "type": "record", "name": "Name", "namespace": f"com.sforce.eventbus.{entity}",
                    "fields": [{"name": n, **_nullable(AVRO_TYPES[t])} for n, t in name_parts]})})
            continue
        out.append({"name": name, **_nullable(AVRO_TYPES[sf_type])})
    return {"type": "record", "name": f"{entity}ChangeEvent", "namespace": "com.sforce.eventbus", "fields": out}


def compound_fields(field: Mapping) -> list[dict] | None:
    """The parts of a compound (nested record) field, else None."""
    for branch in field["type"] if isinstance(field["type"], list) else [field["type"]]:
        if isinstance(branch, dict) and branch.get("type") == "record":
            return branch["fields"]
    return None


def _bits(hex_bitmap: str) -> list[int]:
    """Positions of the set bits, lowest first ("0x5" -> [0, 2])."""
    value = int(hex_bitmap, 16)
    return [i for i in range(value.bit_length()) if value >> i & 1]


def bitmap(positions: Iterable[int]) -> str:
    """The hex bitmap with `positions` set ([0, 2] -> "0x5")."""
    return hex(sum(1 << i for i in set(positions)))


def field_names(bitmaps: Iterable[str], schema: Mapping) -> list[str]:
    """The field names a bitmap field (changedFields, nulledFields,
    diffFields) lists, in schema order; parts of a compound field by their
    own names (FirstName, not Name). A position past the schema (a field
    newer than the schema we hold) raises ValueError."""
    top = schema["fields"]
    names: list[str] = []
    for entry in bitmaps:
        parent, _, hex_bitmap = entry.rpartition("-")
        fields = top if not parent else compound_fields(top[int(parent)])
        if fields is None:
            raise ValueError(f"bitmap {entry!r} names parts of a field that has none")
        for position in _bits(hex_bitmap):
            if position >= len(fields):
                raise ValueError(f"bitmap {entry!r} names field {position}; the schema has {len(fields)}")
            names.append(fields[position]["name"])
    return names


def field_bitmaps(names: Iterable[str], schema: Mapping) -> list[str]:
    """The inverse of `field_names`: the bitmap entries that list `names`
    (top level first, then one entry per compound field with parts named)."""
    wanted = set(names)
    top = schema["fields"]
    positions = [i for i, f in enumerate(top) if f["name"] in wanted]
    entries = [bitmap(positions)] if positions else []
    for i, field in enumerate(top):
        parts = compound_fields(field)
        part_positions = [j for j, p in enumerate(parts or []) if p["name"] in wanted]
        if part_positions:
            entries.append(f"{i}-{bitmap(part_positions)}")
    return entries
