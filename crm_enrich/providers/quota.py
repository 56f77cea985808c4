"""Clodura's daily quota (409), its credits (402) and our own daily credit
budget, shared by every worker through Redis.

When any of them says stop, credit-spending steps stop for everyone at once
(jobs park as `deferred` or `paused`, nothing is dropped), and the sweeper
resumes them: the quota at its reset, credits when /credits shows a balance
again, the budget at the next UTC day.

The budget holds across workers and for charges that come later: before a
request goes out, its step's highest cost (COSTS) is reserved in one Lua
script that adds it only if spent + reserved + cost stays within the
budget; the reservation is settled to the real charge when the answer
comes (a reveal's with its callback) and released when the request fails
or is answered from the cache. A reservation nobody settles (its worker
died) lapses after its hold time.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import redis

from crm_enrich import counters, keys
from crm_enrich.redis_typing import text

QUOTA_UNTIL = keys.QUOTA_UNTIL
CREDITS_PAUSED = keys.CREDITS_PAUSED
BUDGET_PAUSED_UNTIL = keys.BUDGET_PAUSED_UNTIL
REMAINING = keys.credits_remaining("clodura")
RESERVED = keys.credits_reserved("clodura")
# How long a reservation of a request answered at once may stay unsettled.
SYNC_HOLD_S = 600
T = TypeVar("T")

# KEYS: spent today, reservations, budget pause. ARGV: budget, cost, this
# reservation's name, when it lapses, now, pause until (and its EXAT).
# Lapsed reservations are dropped; this one, if it exists, is replaced.
# Answers 1 (reserved), 0 (the day's spending leaves no room: paused until
# midnight) or -1 (requests in flight hold the rest: try again soon).
_RESERVE = """
local budget, cost, name = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local now = tonumber(ARGV[5])
local reserved = 0
local entries = redis.call('HGETALL', KEYS[2])
for i = 1, #entries, 2 do
  local amount, lapses = string.match(entries[i + 1], '^([^|]+)|(.+)$')
  if tonumber(lapses) < now then
    redis.call('HDEL', KEYS[2], entries[i])
  elseif entries[i] ~= name then
    reserved = reserved + tonumber(amount)
  end
end
local spent = tonumber(redis.call('GET', KEYS[1]) or '0')
if spent + cost > budget + 1e-9 then
  redis.call('SET', KEYS[3], ARGV[6], 'EXAT', ARGV[7])
  return 0
end
if spent + reserved + cost > budget + 1e-9 then
  return -1
end
redis.call('HSET', KEYS[2], name, ARGV[2] .. '|' .. ARGV[4])
redis.call('EXPIRE', KEYS[2], 2 * 86400)
return 1
"""

# Credits per step (docs/clodura.md#credits), the most a step can cost.
# Organisation search's cost is not documented (docs/clodura.md#credits); it spends what it says.
COSTS = {"enrich": 2.0, "verify": 0.04, "verify_deep": 0.1, "reveal_email": 6.0, "reveal_phone": 20.0,
         "org_enrich": 4.0, "org_search": 0.0,
         # Account signals: news is 2 a request; job posts' price is not documented (2 assumed).
         "job_posts": 2.0, "news": 2.0}
# The waterfall for people enrich does not match, and the email-type checks
# (docs/clodura.md#people-search, docs/clearout.md#credits). The clearout_*
# prices are in Clearout's credits, which are its own: they never count
# against Clodura's balance or our budget (the attribute check's is
# Inferred, and CLEAROUT_ATTRIBUTE_CHECK_CREDITS overrides it).
COSTS.update({"people_search": 1.0, "clearout_reverse_email": 4.0, "clearout_reverse_linkedin": 4.0,
              "clearout_attribute_check": 1.0})


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def next_utc_midnight() -> float:
    now = datetime.now(UTC)
    return (now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)).timestamp()


class QuotaExhausted(Exception):
    def __init__(self, until: float):
        super().__init__(f"Clodura daily quota used up until {datetime.fromtimestamp(until, UTC):%H:%M:%S}Z")
        self.until = until


class SpendingPaused(Exception):
    pass


class Quota:
    def __init__(self, client: redis.Redis, daily_budget: float | None = None):
        self.r = client
        self.daily_budget = daily_budget

        self._reserve = client.register_script(_RESERVE)

    # reading the state
    def _check_stops(self) -> None:
        until = float(self.r.get(QUOTA_UNTIL) or 0)
        if until > time.time():
            raise QuotaExhausted(until)
        reason = self.r.get(CREDITS_PAUSED)
        if reason:
            raise SpendingPaused(reason)

    def _budget_reached(self) -> SpendingPaused:
        return SpendingPaused(f"daily credit budget of {self.daily_budget:g} reached")

    # reserving, settling, releasing
    def reserve(self, step: str, job_id: str, hold_s: float = SYNC_HOLD_S) -> None:
        """Raise if a credit-spending step may not run now; else hold its
        highest cost against today's budget until `settle` or `release`
        (or `hold_s` passes)."""
        self._check_stops()
        if self.daily_budget is None:
            return
        if float(self.r.get(BUDGET_PAUSED_UNTIL) or 0) > time.time():
            raise self._budget_reached()
        now = time.time()
        midnight = next_utc_midnight()
        answer = self._reserve(keys=[keys.credits_spent("clodura", today()), RESERVED, BUDGET_PAUSED_UNTIL],
                               args=[self.daily_budget, COSTS[step], _reservation(step, job_id), now + hold_s,
                                     now, midnight, int(midnight) + 60])
        if answer == 0:
            raise self._budget_reached()
        if answer == -1:
            # Not paused for everyone: the sweeper resumes the job on its next
            # round, when the requests in flight may have cost less.
            raise SpendingPaused(f"daily credit budget of {self.daily_budget:g} held by requests in flight")

    def settle(self, step: str, job_id: str, credits: float) -> None:
        """The answer came: its real charge counts, the reservation goes."""
        self.record_spend(credits, job_id, release=_reservation(step, job_id))

    def release(self, step: str, job_id: str) -> None:
        """Nothing was charged (the request failed, or the cache answered)."""
        self.r.hdel(RESERVED, _reservation(step, job_id))

    @contextmanager
    def spending(self, step: str, job_id: str) -> Iterator[None]:
        """Reserve for a request answered at once; release if it raises.
        The caller settles the charge (or releases, for a cached answer)."""
        self.reserve(step, job_id)
        try:
            yield
        except BaseException:
            self.release(step, job_id)
            raise

    def charged(self, step: str, job_id: str, call: Callable[[], T], credits: Callable[[T], float]) -> T:
        """Reserve, make the request, settle to what it cost."""
        with self.spending(step, job_id):
            answer = call()
        self.settle(step, job_id, credits(answer))
        return answer

    def reserved(self) -> float:
        return sum(float(str(v).split("|", 1)[0]) for v in self.r.hvals(RESERVED))

    def spent_today(self) -> float:
        return float(self.r.get(keys.credits_spent("clodura", today())) or 0)

    def quota_resets_in(self) -> float:
        return max(0.0, float(self.r.get(QUOTA_UNTIL) or 0) - time.time())

    def paused_reason(self) -> str | None:
        return text(self.r.get(CREDITS_PAUSED))

    def budget_paused(self) -> bool:
        return float(self.r.get(BUDGET_PAUSED_UNTIL) or 0) > time.time()

    # changing it
    def record_spend(self, credits: float, job_id: str | None = None, release: str | None = None) -> None:
        """Count credits against today's budget and, for the admin job view,
        against the job that spent them; `release` names the reservation
        they settle (one transaction)."""
        pipe = self.r.pipeline(transaction=True)
        if release:
            pipe.hdel(RESERVED, release)
        if credits:
            key = keys.credits_spent("clodura", today())
            pipe.incrbyfloat(key, credits)
            pipe.expire(key, keys.CREDITS_SPENT_TTL_S)
            if job_id:
                pipe.hincrbyfloat(keys.job(job_id), "credits", credits)
        pipe.execute()
        if credits:
            counters.incr(self.r, "provider_credits", credits, provider="clodura")

    def quota_exhausted(self, retry_after: float | None) -> float:
        """409: nobody calls until the provider's day rolls over (its
        Retry-After if given, else midnight UTC)."""
        until = time.time() + retry_after if retry_after else next_utc_midnight()
        self.r.set(QUOTA_UNTIL, until, exat=int(until) + 60)
        return until

    def credits_exhausted(self) -> None:
        self.r.set(CREDITS_PAUSED, "Clodura credits exhausted (402)")

    def credits_available(self, remaining: float) -> bool:
        """After a /credits check: resume spending if the balance covers a step."""
        self.r.set(REMAINING, remaining)
        if remaining >= COSTS["enrich"]:
            self.r.delete(CREDITS_PAUSED)
            return True
        return False


def _reservation(step: str, job_id: str) -> str:
    return f"{job_id}:{step}"
