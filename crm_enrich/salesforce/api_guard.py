"""The org's daily API allocation, shared with every other integration it
runs. Every Salesforce answer's Sforce-Limit-Info updates one counter in
Redis that all our processes read. Above `bulk_share` of the allocation only
urgent work (new records) may call; above `all_share`, nothing may, until
the count falls or the pause set after a REQUEST_LIMIT_EXCEEDED ends."""
from __future__ import annotations

import time

import redis

from crm_enrich import keys

USAGE_KEY = keys.SALESFORCE_API_USAGE
PAUSE_KEY = keys.SALESFORCE_PAUSED_UNTIL


class ApiGuard:
    def __init__(self, client: redis.Redis, bulk_share: float = 0.80, all_share: float = 0.95):
        self.r = client
        self.bulk_share = bulk_share
        self.all_share = all_share

    def record_usage(self, used: int, total: int) -> None:
        self.r.hset(USAGE_KEY, mapping={"used": used, "total": total, "at": time.time()})

    def _reading(self) -> tuple[int, int, float] | None:
        """(used, allocation, when read) from the last Sforce-Limit-Info."""
        raw = self.r.hgetall(USAGE_KEY)
        return (int(raw["used"]), int(raw["total"]), float(raw["at"])) if raw else None

    def reading_age_s(self) -> float:
        reading = self._reading()
        return time.time() - reading[2] if reading else float("inf")

    def usage(self) -> tuple[int, int] | None:
        reading = self._reading()
        return reading[:2] if reading else None

    def pause(self, seconds: float) -> None:
        self.r.set(PAUSE_KEY, time.time() + seconds, px=int(seconds * 1000) + 1000)

    def paused_for(self) -> float:
        until = self.r.get(PAUSE_KEY)
        return max(0.0, float(until) - time.time()) if until else 0.0

    def may_call(self, urgent: bool, stale_after_s: float = 300) -> bool:
        if self.paused_for() > 0:
            return False
        reading = self._reading()
        if reading is None or time.time() - reading[2] > stale_after_s:
            return True  # the call itself brings a fresh count
        used, total, _ = reading
        return (used / total if total else 0.0) < (self.all_share if urgent else self.bulk_share)
