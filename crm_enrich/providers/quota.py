"""Clodura's daily quota (409), its credits (402) and our own daily credit
budget, shared by every worker through Redis.

When any of them says stop, credit-spending steps stop for everyone at once
(jobs park as `deferred` or `paused`, nothing is dropped), and the sweeper
resumes them: the quota at its reset, credits when /credits shows a balance
again, the budget at the next UTC day.
"""
from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import redis

from crm_enrich import counters, keys
from crm_enrich.redis_typing import text

QUOTA_UNTIL = keys.QUOTA_UNTIL
CREDITS_PAUSED = keys.CREDITS_PAUSED
BUDGET_PAUSED_UNTIL = keys.BUDGET_PAUSED_UNTIL
REMAINING = keys.credits_remaining("clodura")

# Credits per step (docs/clodura.md#credits), the most a step can cost.
# Organisation search's cost is not documented (docs/clodura.md#credits); it spends what it says.
COSTS = {"enrich": 2.0, "verify": 0.04, "verify_deep": 0.1, "reveal_email": 6.0, "reveal_phone": 20.0,
         "org_enrich": 4.0, "org_search": 0.0}


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

    # reading the state
    def check(self, step: str) -> None:
        """Raise if a credit-spending step may not run now."""
        until = float(self.r.get(QUOTA_UNTIL) or 0)
        if until > time.time():
            raise QuotaExhausted(until)
        reason = self.r.get(CREDITS_PAUSED)
        if reason:
            raise SpendingPaused(reason)
        if self.daily_budget is not None:
            if float(self.r.get(BUDGET_PAUSED_UNTIL) or 0) > time.time():
                raise SpendingPaused(f"daily credit budget of {self.daily_budget:g} reached")
            if self.spent_today() + COSTS[step] > self.daily_budget:
                self.r.set(BUDGET_PAUSED_UNTIL, next_utc_midnight(), exat=int(next_utc_midnight()) + 60)
                raise SpendingPaused(f"daily credit budget of {self.daily_budget:g} reached")

    def spent_today(self) -> float:
        return float(self.r.get(keys.credits_spent("clodura", today())) or 0)

    def quota_resets_in(self) -> float:
        return max(0.0, float(self.r.get(QUOTA_UNTIL) or 0) - time.time())

    def paused_reason(self) -> str | None:
        return text(self.r.get(CREDITS_PAUSED))

    def budget_paused(self) -> bool:
        return float(self.r.get(BUDGET_PAUSED_UNTIL) or 0) > time.time()

    # changing it
    def record_spend(self, credits: float, job_id: str | None = None) -> None:
        """Count credits against today's budget and, for the admin job view,
        against the job that spent them."""
        if credits:
            key = keys.credits_spent("clodura", today())
            pipe = self.r.pipeline()
            pipe.incrbyfloat(key, credits)
            pipe.expire(key, keys.CREDITS_SPENT_TTL_S)
            if job_id:
                pipe.hincrbyfloat(keys.job(job_id), "credits", credits)
            pipe.execute()
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
