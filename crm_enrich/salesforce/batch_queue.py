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
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import redis

from crm_enrich import keys
from crm_enrich.redis_typing import members, scored

# Move due delayed items to pending, then take up to N pending items into
# this batch's in-flight list; all or nothing. With ARGV[3] = 1, only items
# of the first one's object (among the first ARGV[4]), the others keeping
# their places: a read batch is one SOQL query per object, so a batch of one
# object is one call.
_TAKE = """
local pending, delayed, inflight = KEYS[1], KEYS[2], KEYS[3]
local now, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now)
for _, item in ipairs(due) do
  redis.call('RPUSH', pending, item)
  redis.call('ZREM', delayed, item)
end
local taken = {}
if ARGV[3] == '1' then
  local window = redis.call('LRANGE', pending, 0, tonumber(ARGV[4]) - 1)
  if #window == 0 then return taken end
  local object = cjson.decode(window[1])['object']
  local keep = {}
  for _, item in ipairs(window) do
    if #taken < n and cjson.decode(item)['object'] == object then
      taken[#taken + 1] = item
    else
      keep[#keep + 1] = item
    end
  end
  redis.call('LTRIM', pending, #window, -1)
  for i = #keep, 1, -1 do redis.call('LPUSH', pending, keep[i]) end
  for _, item in ipairs(taken) do redis.call('RPUSH', inflight, item) end
  return taken
end
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

# Queue an item and note when it came, in its lane (new records' work,
# "urgent", or bulk): the time since the lane's previous item tells a
# trickle (send at once) from a burst (wait for batch mates). Corks are
# "lane|reason": an urgent item is held only by urgent corks, so a live
# record never waits on a backfill's burst. The item's own job leaves the
# corks (a partner, "lane|job", or its burst, "lane|~job", was waiting for
# it), and it may add one for a partner.
_ADD = """
local pending, last_add, gap, corks, recent = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local item, now, lane = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local job_id, hold_for, hold_until = ARGV[4], ARGV[5], ARGV[6]
local waiting = redis.call('RPUSH', pending, item)
local previous = tonumber(redis.call('GET', last_add) or '0')
redis.call('SET', last_add, ARGV[2], 'EX', 3600)
redis.call('SET', gap, tostring(now - previous), 'EX', 3600)
local uncorked = redis.call('ZREM', corks, lane .. '|' .. job_id, lane .. '|~' .. job_id)
-- The jobs whose items came in the last minute: a partner whose item is
-- already here is not waited for (two partners finishing together would
-- otherwise each wait for the other).
redis.call('ZADD', recent, now, job_id)
redis.call('ZREMRANGEBYSCORE', recent, '-inf', now - 60)
redis.call('EXPIRE', recent, 120)
if hold_for ~= '' and not redis.call('ZSCORE', recent, hold_for) then
  redis.call('ZADD', corks, hold_until, lane .. '|' .. hold_for)
end
redis.call('ZREMRANGEBYSCORE', corks, '-inf', now)
local holding = 0
for _, member in ipairs(redis.call('ZRANGE', corks, 0, -1)) do
  if lane == 'bulk' or string.sub(member, 1, 7) == 'urgent|' then holding = holding + 1 end
end
return {waiting, tostring(now - previous), uncorked, holding}
"""

# Whether new records' work waits among the first ARGV[1] pending items.
_URGENT_WAITING = """
for _, item in ipairs(redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)) do
  if string.find(item, '"urgent": true', 1, true) then return 1 end
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


TAKE_WINDOW = 2000   # pending items looked through for a batch of one object
URGENT, BULK = "urgent", "bulk"   # the lanes: new records' work, and the rest


EXPECTED = "~"   # a cork's reason "~<job id>": a burst awaits that job's item


def lane_of(item: dict) -> str:
    return URGENT if item.get("urgent") else BULK


@dataclass
class Batch:
    key: str
    items: list[dict]


@dataclass(frozen=True)
class Added:
    waiting: int        # items pending now, this one included
    gap_s: float        # since the item before it
    uncorked: bool      # a cork was waiting for this item's job
    corked: bool        # corks remain


class BatchQueue:
    def __init__(self, client: redis.Redis, name: str, max_batch: int = 200, lease_s: float = 300,
                 one_object_a_batch: bool = False):
        self.r = client
        self.one_object_a_batch = one_object_a_batch
        self.name = name
        self.max_batch = max_batch
        self.lease_s = lease_s
        self.pending = keys.batch_queue(name, "pending")
        self.delayed = keys.batch_queue(name, "delayed")
        self.inflight_index = keys.batch_queue(name, "inflight")
        self.lock = keys.batch_queue(name, "lease")
        self.scheduled = keys.batch_queue(name, "flush_scheduled")
        self.recovery = keys.batch_queue(name, "recovery_scheduled")
        # Batching that waits only when waiting pays: when the last item
        # came and after how long a gap, how long a flush takes, and the
        # corks (reasons to wait for more: a burst announced, a partner's
        # item on its way), each until its time.
        self.flush_time = keys.batch_queue(name, "flush_s")
        self.corks = keys.batch_queue(name, "corks")
        self.recent_jobs = keys.batch_queue(name, "recent_jobs")
        self._add = client.register_script(_ADD)
        self._urgent_waiting = client.register_script(_URGENT_WAITING)
        self._take = client.register_script(_TAKE)
        self._recover = client.register_script(_RECOVER)
        self._release = client.register_script(_RELEASE)

    # producers
    def _last_add(self, lane: str) -> str:
        return keys.batch_queue(self.name, f"last_add:{lane}")

    def _gap(self, lane: str) -> str:
        return keys.batch_queue(self.name, f"gap:{lane}")

    def add(self, item: dict, hold_for: str | None = None, hold_s: float = 0) -> Added:
        """Queue an item (and, with `hold_for`, cork its lane until that
        job's item comes, `hold_s` at most)."""
        now, lane = time.time(), lane_of(item)
        waiting, gap, uncorked, corks = self._add(
            keys=[self.pending, self._last_add(lane), self._gap(lane), self.corks, self.recent_jobs],
            args=[json.dumps(item), repr(now), lane, item.get("job_id", ""), hold_for or "", repr(now + hold_s)])
        return Added(int(waiting), float(gap), bool(uncorked), int(corks) > 0)

    def cork(self, reason: str, for_s: float, lane: str) -> None:
        """Hold the lane's batches back for up to `for_s`: more items are on their way."""
        self.r.zadd(self.corks, {f"{lane}|{reason}": time.time() + for_s})

    def expect(self, job_ids: list[str], for_s: float, lane: str) -> None:
        """Hold the lane's batches back until each of these jobs has queued
        its item here or gone elsewhere (see `expected_jobs`), `for_s` at most:
        a burst's batch mates, known by name."""
        if job_ids:
            until = time.time() + for_s
            self.r.zadd(self.corks, {f"{lane}|{EXPECTED}{job_id}": until for job_id in job_ids})

    def is_expected(self, job_id: str, lane: str) -> float | None:
        """Until when this lane's batches wait for the job's item (None: they don't)."""
        return self.r.zscore(self.corks, f"{lane}|{EXPECTED}{job_id}")

    def expected_jobs(self, lane: str) -> dict[str, str]:
        """The corks of a burst's named jobs that hold this lane: {cork: job id}."""
        out = {}
        for member in members(self.r.zrange(self.corks, 0, -1)):
            cork_lane, _, reason = member.partition("|")
            if reason.startswith(EXPECTED) and (lane == BULK or cork_lane == URGENT):
                out[member] = reason[len(EXPECTED):]
        return out

    def uncork(self, corks: Iterable[str]) -> None:
        corks = list(corks)
        if corks:
            self.r.zrem(self.corks, *corks)

    def cork_left_s(self, lane: str) -> float:
        """Seconds until the last cork that holds this lane ends (0: none)."""
        now = time.time()
        pipe = self.r.pipeline(transaction=False)
        pipe.zremrangebyscore(self.corks, "-inf", now)
        pipe.zrange(self.corks, 0, -1, withscores=True)
        _, corks = pipe.execute()
        ends = [until for member, until in corks if lane == BULK or str(member).startswith(f"{URGENT}|")]
        return max(0.0, max(ends) - now) if ends else 0.0

    def arrivals(self, lane: str) -> tuple[float, float]:
        """(seconds since the lane's last item, the gap before that item)."""
        last, gap = self.r.mget([self._last_add(lane), self._gap(lane)])
        since = time.time() - float(last) if last else float("inf")
        return since, float(gap) if gap else float("inf")

    def urgent_waiting(self) -> bool:
        return bool(self._urgent_waiting(keys=[self.pending], args=[TAKE_WINDOW]))

    def flushing(self) -> bool:
        return bool(self.r.exists(self.lock))

    def note_flush_time(self, seconds: float) -> None:
        self.r.set(self.flush_time, repr(seconds), ex=3600)

    def last_flush_s(self) -> float:
        value = self.r.get(self.flush_time)
        return float(value) if value else 0.0

    def claim_recovery_slot(self, within_s: float) -> bool:
        """True for the one caller that should come back when the current
        flusher's lease ends (should it have died): kept apart from the
        next flush's slot, which a live flusher claims for itself."""
        return bool(self.r.set(self.recovery, "1", nx=True, px=max(1, int(within_s * 1000))))

    def take_delayed(self, belongs: Callable[[dict], bool]) -> list[dict]:
        """Remove and answer the delayed items `belongs` picks (each only if
        no flusher took it meanwhile)."""
        taken = []
        for raw in members(self.r.zrange(self.delayed, 0, -1)):
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
        first = scored(self.r.zrange(self.delayed, 0, 0, withscores=True))
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
        raw = self._take(keys=[self.pending, self.delayed, key],
                         args=[time.time(), self.max_batch, int(self.one_object_a_batch), TAKE_WINDOW])
        if not raw:
            self.r.srem(self.inflight_index, key)
            return None
        return Batch(key, [json.loads(item) for item in raw])

    def done(self, batch: Batch, retry: Iterable[tuple[dict, float]] = ()) -> None:
        """Salesforce answered: items to try again go to `delayed`, the
        batch's in-flight list goes away; one transaction."""
        pipe = self.r.pipeline(transaction=True)
        for item, delay in retry:
            pipe.zadd(self.delayed, {json.dumps(item): time.time() + delay})
        pipe.delete(batch.key)
        pipe.srem(self.inflight_index, batch.key)
        pipe.execute()
