"""The flow's tests get a `Flow` (tests.unit.flow.harness) on a fresh Redis database."""
from __future__ import annotations

import pytest

from tests.unit.flow.harness import Flow, build_flow


@pytest.fixture
def make_flow(redis_client):
    """A Flow with other settings (or the response cache's TTL)."""
    return lambda **kw: build_flow(redis_client, **kw)


@pytest.fixture
def flow(make_flow) -> Flow:
    return make_flow()
