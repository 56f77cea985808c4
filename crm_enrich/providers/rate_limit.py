"""A rate limiter shared by every worker process: all of a provider key's
windows (second, minute, day) are checked and taken in one atomic Lua call.

Celery's own rate_limit counts per worker process, so N workers would send
N times the plan's limit.
"""
from __future__ import annotations

import time
import uuid

import redis

from crm_enrich import keys

# Sliding-window log: one sorted set of request times per window. Either all
# windows have room and the request is recorded in each, or nothing changes
# and the script answers how long until the fullest window frees a slot.
# Times are Redis's own clock, not the caller's: workers on several hosts
# share the windows, and a host whose clock is a second off would otherwise
# see the others' requests as older (or newer) than they are.
_ACQUIRE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local member = ARGV[1]
local margin = tonumber(ARGV[2])
local wait = 0
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[1 + 2 * i])
  local window = tonumber(ARGV[2 + 2 * i]) + margin
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) >= limit then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    local free_at = tonumber(oldest[2]) + window
    if free_at - now > wait then wait = free_at - now end
  end
end
if wait > 0 then return tostring(wait) end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, member)
  redis.call('PEXPIRE', key, math.ceil((tonumber(ARGV[2 + 2 * i]) + margin) * 1000) + 1000)
end
return '0'
"""


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
        self.keys = [keys.rate_limit_window(name, window) for _, window in limits]
        self.limits = limits
        self._script = client.register_script(_ACQUIRE)

    def try_acquire(self) -> float:
        """0 when a slot was taken, else seconds until one may be free."""
        args: list[float | str] = [uuid.uuid4().hex, self.margin_s]
        for limit, window in self.limits:
            args += [limit, window]
        return float(self._script(keys=self.keys, args=args))

    def acquire(self, max_wait_s: float = 2.0) -> None:
        """Take a slot, waiting at most max_wait_s; longer waits raise
        RateLimited so the task can hand its worker back and retry later."""
        deadline = time.monotonic() + max_wait_s
        while True:
            wait = self.try_acquire()
            if wait == 0:
                return
            if time.monotonic() + wait > deadline:
                raise RateLimited(wait)
            time.sleep(wait)
