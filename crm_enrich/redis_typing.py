"""Redis values as crm-enrich reads and writes them, said once for the
type checker.

Every client crm-enrich reads with is made with `decode_responses=True`
(`JobStore.from_url`, the dev stack), so a reply is `str`, never `bytes`;
redis-py cannot know how a client was made and types replies
`bytes | str`. Nothing here changes a value at run time: each function
answers its argument as it is.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from redis.typing import EncodableT, FieldT, ZSetRangeResponse


def text(reply: bytes | str | None) -> str | None:
    """A string reply (GET, HGET, LINDEX ...), or None for a missing key."""
    return cast("str | None", reply)


def texts(reply: list[bytes | str]) -> list[str]:
    """A list of strings (LRANGE ...)."""
    return cast("list[str]", reply)


def members(reply: object) -> list[str]:
    """A ZRANGE / ZREVRANGE answer without scores."""
    return cast(list[str], reply)


def text_set(reply: set[bytes | str]) -> set[str]:
    """A set's members (SMEMBERS)."""
    return cast("set[str]", reply)


def text_hash(reply: dict[bytes | str, bytes | str]) -> dict[str, str]:
    """A hash's fields and values (HGETALL)."""
    return cast("dict[str, str]", reply)


def hash_fields(mapping: Mapping[str, EncodableT]) -> Mapping[FieldT, EncodableT]:
    """A hash to write (HSET mapping=...). redis-py asks for a mapping keyed
    by any field type, which a mapping keyed by `str` is not to mypy (a
    mapping's key type is invariant)."""
    return cast("Mapping[FieldT, EncodableT]", mapping)


def scored(reply: ZSetRangeResponse) -> list[tuple[str, float]]:
    """A sorted set's members with their scores (ZRANGE ... WITHSCORES)."""
    return cast("list[tuple[str, float]]", reply)
