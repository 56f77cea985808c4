"""A rate limiter shared by every worker process: all of a provider key's
windows (second, minute, day) are checked and taken in one atomic Lua call.

Celery's own rate_limit counts per worker process, so N workers would send
N times the plan's limit.
"""
from __future__ import annotations

import contextlib
import contextvars
import time
import uuid
from collections.abc import Iterator

import redis

from crm_enrich import keys

# Sliding-window log: one sorted set of request times per window. Either all
# windows have room and the request is recorded in each, or nothing changes
# and the script answers how long until the fullest window frees a slot.
# Times are Redis's own clock, not the caller's: workers on several hosts
# share the windows, and a host whose clock is a second off would otherwise
# see the others' requests as older (or newer) than they are.
# Live work first: a live caller that has to wait says so (the last key,
# until its slot should be free), and bulk callers take no slot meanwhile.
_ACQUIRE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local member = ARGV[1]
local margin = tonumber(ARGV[2])
local live = ARGV[3] == '1'
local live_waiting = KEYS[#KEYS]
if not live then
  local ttl = redis.call('PTTL', live_waiting)
  if ttl > 0 then return tostring(ttl / 1000) end
end
local wait = 0
for i = 1, #KEYS - 1 do
  local key = KEYS[i]
  local limit = tonumber(ARGV[2 + 2 * i])
  local window = tonumber(ARGV[3 + 2 * i]) + margin
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) >= limit then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    local free_at = tonumber(oldest[2]) + window
    if free_at - now > wait then wait = free_at - now end
  end
end
if wait > 0 then
  if live then redis.call('SET', live_waiting, '1', 'PX', math.min(math.ceil(wait * 1000) + 250, 10000)) end
  return tostring(wait)
end
for i = 1, #KEYS - 1 do
  redis.call('ZADD', KEYS[i], now, member)
  redis.call('PEXPIRE', KEYS[i], math.ceil((tonumber(ARGV[3 + 2 * i]) + margin) * 1000) + 1000)
end
return '0'
"""

# Whether the calls made now are for new records (live work) or for bulk
# work (backfills, re-runs); set by whoever runs a job (flow.run).
_LIVE = contextvars.ContextVar("crm_enrich_live_work", default=True)
BULK_MAX_WAIT_S = 0.5   # bulk work hands its worker back sooner, for live work to use


@contextlib.contextmanager
def live_work(live: bool) -> Iterator[None]:
    """The limiters serve the calls made inside this block as live work
    (first) or bulk work (after any live caller that is waiting)."""
    token = _LIVE.set(live)
    try:
        yield
    finally:
        _LIVE.reset(token)


class RateLimited(Exception):
    def __init__(self, wait_s: float):
        super().__init__(f"rate limit: next slot in {wait_s:.2f}s")
        self.wait_s = wait_s


class SharedRateLimiter:
    def __init__(self, client: redis.Redis, name: str, limits: list[tuple[int, int]],
                 margin_s: float = 0.25):
        # The provider counts arrival times, we count departure times; the
        # margin absorbs the difference so a window edge never gives a 429.
        self.margin_s = margin_s
        self.r = client
        self.keys = [keys.rate_limit_window(name, window) for _, window in limits] + [
            keys.rate_limit_live_waiting(name)]
        self.limits = limits
        self._script = client.register_script(_ACQUIRE)

    def try_acquire(self) -> float:
        """0 when a slot was taken, else seconds until one may be free."""
        args: list[float | str] = [uuid.uuid4().hex, self.margin_s, int(_LIVE.get())]
        for limit, window in self.limits:
            args += [limit, window]
        return float(self._script(keys=self.keys, args=args))

    def acquire(self, max_wait_s: float = 2.0) -> None:
        """Take a slot, waiting at most max_wait_s; longer waits raise
        RateLimited so the task can hand its worker back and retry later
        (bulk work waits BULK_MAX_WAIT_S at most, so that a worker is soon
        free for live work)."""
        if not _LIVE.get():
            max_wait_s = min(max_wait_s, BULK_MAX_WAIT_S)
        deadline = time.monotonic() + max_wait_s
        while True:
            wait = self.try_acquire()
            if wait == 0:
                return
            if time.monotonic() + wait > deadline:
                raise RateLimited(wait)
            time.sleep(wait)
