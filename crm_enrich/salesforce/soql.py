"""SOQL we build: a selection by an operator's condition, checked so that
only a condition, never a whole query, comes from outside."""
from __future__ import annotations

import re
from typing import Any

MAX_WHERE_CHARS = 4_000

# Words that would change the query around the condition instead of being
# part of it (checked outside string literals).
_FORBIDDEN_WORDS = re.compile(r"\b(LIMIT|ORDER|OFFSET|GROUP|HAVING|FOR|UPDATE|VIEW|REFERENCE|WITH)\b",
                              re.IGNORECASE)
_STRING_LITERAL = re.compile(r"'(?:\\.|[^'\\])*'")


class InvalidCondition(ValueError):
    """The condition is not one we may put in a query."""


def validate_where(where: Any) -> str:
    if not isinstance(where, str) or not where.strip():
        raise InvalidCondition("where must be a non-empty SOQL condition")
    if len(where) > MAX_WHERE_CHARS:
        raise InvalidCondition(f"where must be at most {MAX_WHERE_CHARS} characters")
    if ";" in where:
        raise InvalidCondition("where must not contain ';'")
    if any(ord(c) < 32 and c not in "\t\n\r" for c in where):
        raise InvalidCondition("where must not contain control characters")
    outside = _STRING_LITERAL.sub("''", where)
    if "'" in outside.replace("''", ""):
        raise InvalidCondition("where has an unterminated string literal")
    word = _FORBIDDEN_WORDS.search(outside)
    if word:
        raise InvalidCondition(f"where must be a condition only; {word.group(1).upper()} is not allowed")
    return where.strip()


def selection_soql(select: str, object_type: str, where: str | None, order_by: str | None = None,
                   limit: int | None = None) -> str:
    """The query of a selection by condition. Only a condition (checked by
    validate_where), never a whole query, comes from an operator; ordering
    and a limit are ours (a capped run such as a scheduled re-verification)."""
    soql = f"SELECT {select} FROM {object_type}" + (f" WHERE {where}" if where else "")
    if limit is not None:
        soql += f" ORDER BY {order_by or 'Id'} LIMIT {int(limit)}"
    return soql
