"""A reliable batch queue in Redis, for calls that Salesforce lets us make
200 records at a time (SOQL reads, sObject Collections writes).

Items wait in `pending` (or in `delayed` until their time comes). A flusher
holds a lease (a lock with a TTL), moves up to 200 items into an in-flight
list, makes its one call, and only then removes them. Nothing is removed
before Salesforce has answered: if the flusher dies, its lease runs out and
the next flusher puts the in-flight items back first. One flusher at a time
per queue, so a record's writes are never reordered.
"""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import redis

from crm_enrich import keys

# Move due delayed items to pending, then take up to N pending items into
# this batch's in-flight list; all or nothing.
_TAKE = """
local pending, delayed, inflight = KEYS[1], KEYS[2], KEYS[3]
local now, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now)
for _, item in ipairs(due) do
  redis.call('RPUSH', pending, item)
  redis.call('ZREM', delayed, item)
end
local taken = {}
for i = 1, n do
  local item = redis.call('LMOVE', pending, inflight, 'LEFT', 'RIGHT')
  if not item then break end
  taken[#taken + 1] = item
end
return taken
"""

# Put every orphaned in-flight item back at the head of pending, in order.
_RECOVER = """
local pending, index = KEYS[1], KEYS[2]
local batches = redis.call('SMEMBERS', index)
local moved = 0
for _, key in ipairs(batches) do
  while true do
    local item = redis.call('LMOVE', key, pending, 'RIGHT', 'LEFT')
    if not item then break end
    moved = moved + 1
  end
  redis.call('SREM', index, key)
end
return moved
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass
class Batch:
    key: str
    items: list[dict]


class BatchQueue:
    def __init__(self, client: redis.Redis, name: str, max_batch: int = 200, lease_s: float = 300):
        self.r = client
        self.name = name
        self.max_batch = max_batch
        self.lease_s = lease_s
        self.pending = keys.batch_queue(name, "pending")
        self.delayed = keys.batch_queue(name, "delayed")
        self.inflight_index = keys.batch_queue(name, "inflight")
        self.lock = keys.batch_queue(name, "lease")
        self.scheduled = keys.batch_queue(name, "flush_scheduled")
        self._take = client.register_script(_TAKE)
        self._recover = client.register_script(_RECOVER)
        self._release = client.register_script(_RELEASE)

    # producers
    def add(self, item: dict) -> int:
        """Queue an item; answers how many are now waiting."""
        return self.r.rpush(self.pending, json.dumps(item))

    def take_delayed(self, belongs: Callable[[dict], bool]) -> list[dict]:
        """Remove and answer the delayed items `belongs` picks (each only if
        no flusher took it meanwhile)."""
        taken = []
        for raw in self.r.zrange(self.delayed, 0, -1):
            item = json.loads(raw)
            if belongs(item) and self.r.zrem(self.delayed, raw):
                taken.append(item)
        return taken

    def claim_flush_slot(self, within_s: float) -> bool:
        """True for the one caller that should schedule the next flush."""
        return bool(self.r.set(self.scheduled, "1", nx=True, px=max(1, int(within_s * 1000))))

    def size(self) -> int:
        return self.r.llen(self.pending) + self.r.zcard(self.delayed)

    def next_due_in(self) -> float | None:
        """Seconds until the earliest delayed item is due (None if none)."""
        first = self.r.zrange(self.delayed, 0, 0, withscores=True)
        return max(0.0, first[0][1] - time.time()) if first else None

    # the flusher
    def acquire(self) -> str | None:
        token = uuid.uuid4().hex
        if self.r.set(self.lock, token, nx=True, px=int(self.lease_s * 1000)):
            # Whoever held the lease before us is gone: its batch goes back.
            self._recover(keys=[self.pending, self.inflight_index])
            return token
        return None

    def release(self, token: str) -> None:
        self._release(keys=[self.lock], args=[token])

    def lease_left_s(self) -> float:
        return max(0.0, self.r.pttl(self.lock) / 1000)

    def take(self) -> Batch | None:
        key = keys.batch_inflight(self.name, uuid.uuid4().hex)
        self.r.sadd(self.inflight_index, key)
        raw = self._take(keys=[self.pending, self.delayed, key], args=[time.time(), self.max_batch])
        if not raw:
            self.r.srem(self.inflight_index, key)
            return None
        return Batch(key, [json.loads(item) for item in raw])

    def done(self, batch: Batch, retry: list[tuple[dict, float]] = ()) -> None:
        """Salesforce answered: items to try again go to `delayed`, the
        batch's in-flight list goes away; one transaction."""
        pipe = self.r.pipeline(transaction=True)
        for item, delay in retry:
            pipe.zadd(self.delayed, {json.dumps(item): time.time() + delay})
        pipe.delete(batch.key)
        pipe.srem(self.inflight_index, batch.key)
        pipe.execute()
