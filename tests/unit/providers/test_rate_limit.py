"""The shared limiter serves live work first: while a new record's call
waits for a slot, bulk work takes none."""
from __future__ import annotations

import pytest

from crm_enrich.providers.rate_limit import BULK_MAX_WAIT_S, RateLimited, SharedRateLimiter, live_work


@pytest.fixture
def limiter(redis_client):
    return SharedRateLimiter(redis_client, "test", [(2, 1)], margin_s=0)


def test_a_waiting_live_call_keeps_bulk_work_from_the_slot_that_frees(limiter):
    with live_work(False):
        assert limiter.try_acquire() == 0
        assert limiter.try_acquire() == 0     # the window is full
    with live_work(True):
        wait = limiter.try_acquire()
        assert wait > 0                       # live work has to wait too, and says so
    with live_work(False):
        held = limiter.try_acquire()
        assert held > 0                       # bulk yields to the live caller...
    limiter.r.delete(*limiter.keys[:-1])      # ...even once the window has room again
    with live_work(False):
        assert limiter.try_acquire() > 0
    with live_work(True):
        assert limiter.try_acquire() == 0     # the live caller gets the slot


def test_without_a_live_caller_bulk_work_takes_slots_as_before(limiter):
    with live_work(False):
        assert limiter.try_acquire() == 0
        assert limiter.try_acquire() == 0
        assert limiter.try_acquire() > 0


def test_bulk_work_hands_its_worker_back_sooner_than_live_work(limiter):
    """A wait longer than BULK_MAX_WAIT_S raises at once for bulk work (the
    task retries later), while live work would sleep for it."""
    with live_work(True):
        limiter.try_acquire(), limiter.try_acquire()
    with live_work(False), pytest.raises(RateLimited) as raised:
        limiter.acquire(max_wait_s=5.0)
    assert raised.value.wait_s > BULK_MAX_WAIT_S
