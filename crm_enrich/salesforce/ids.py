"""Salesforce record ids and the objects we work on: one place for the id
pattern, the 15 → 18 character conversion and the org check
(docs/salesforce.md#record-ids)."""
from __future__ import annotations

import re

OBJECTS = ("Contact", "Lead", "Account")
PERSON_OBJECTS = frozenset({"Contact", "Lead"})
ID_PATTERN = r"^[a-zA-Z0-9]{15}([a-zA-Z0-9]{3})?$"
SF_ID = re.compile(ID_PATTERN)

_SUFFIX_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def is_record_id(value: object) -> bool:
    return isinstance(value, str) and SF_ID.match(value) is not None


def to_id18(record_id: str) -> str:
    """The case-insensitive 18-character form of a 15- or 18-character id:
    each of the three 5-character chunks gives one suffix character whose
    bits say which of its characters are upper case."""
    if len(record_id) == 18:
        return record_id
    suffix = ""
    for chunk in range(3):
        bits = 0
        for i, ch in enumerate(record_id[chunk * 5:chunk * 5 + 5]):
            if "A" <= ch <= "Z":
                bits |= 1 << i
        suffix += _SUFFIX_ALPHABET[bits]
    return record_id + suffix


def same_org(org_id: str, expected: str) -> bool:
    """18-character ids are the 15-character id plus a checksum suffix."""
    return len(org_id) in (15, 18) and org_id[:15] == expected[:15]
