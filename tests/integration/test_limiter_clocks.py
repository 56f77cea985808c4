"""The shared limiter times its windows by Redis's clock: worker hosts whose
clocks are off still share one plan (a real Redis; a host's wrong clock is
this process's time.time moved)."""
from __future__ import annotations

import time

import pytest
import redis

from crm_enrich.dev.devstack import EmbeddedRedis
from crm_enrich.providers.rate_limit import SharedRateLimiter

LIMITS = [(3, 10)]


@pytest.fixture(scope="module")
def redis_url():
    server = EmbeddedRedis()
    yield server.url
    server.stop()


@pytest.mark.parametrize("skew_s", [30.0, -30.0])
def test_a_host_whose_clock_is_off_gets_no_extra_slots(redis_url, monkeypatch, skew_s):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    first_host = SharedRateLimiter(client, "skew-test", LIMITS)
    other_host = SharedRateLimiter(client, "skew-test", LIMITS)
    assert [first_host.try_acquire() for _ in range(2)] == [0.0, 0.0]
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + skew_s)  # the other host's clock
    assert other_host.try_acquire() == 0.0   # the plan's last slot in this window
    assert other_host.try_acquire() > 0      # and no more, whatever its clock says
    monkeypatch.undo()
    assert first_host.try_acquire() > 0
