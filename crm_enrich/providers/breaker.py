"""A circuit breaker per provider, shared by every worker through Redis.

After BREAKER_FAILURES answers in a row that say the provider is down (5xx,
timeouts, connection errors; with no success in between), the
breaker opens for BREAKER_OPEN_S: nobody calls, jobs park as `deferred`
("provider unavailable") until then. When that time is over, one call at a
time is let through as a probe: its success closes the breaker for
everyone, its failure opens it again. An outage thus costs a handful of
calls per BREAKER_OPEN_S, whatever the number of jobs waiting.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import redis
import requests

from crm_enrich import keys
from crm_enrich.providers.errors import ProviderUnavailable


class CircuitOpen(ProviderUnavailable):
    """Not sent: the provider is down; try again in `wait_s`."""

    def __init__(self, provider: str, wait_s: float):
        super().__init__(f"provider unavailable: {provider} is failing; next try in {wait_s:.0f} s",
                         retry_after=wait_s)
        self.wait_s = wait_s


class CircuitBreaker:
    def __init__(self, client: redis.Redis, provider: str, failures: int, open_s: float,
                 probe_s: float = 60.0):
        self.r = client
        self.provider = provider
        self.failures = failures
        self.open_s = open_s
        # Longer than the longest call, so a slow probe keeps its turn.
        self.probe_ms = int(probe_s * 1000)
        self.key = keys.breaker(provider)
        self.probe_key = keys.breaker_probe(provider)

    def before_call(self) -> None:
        """Raise CircuitOpen unless a call may go out now."""
        until = float(self.r.hget(self.key, "open_until") or 0)
        if not until:
            return
        now = time.time()
        if now < until:
            raise CircuitOpen(self.provider, until - now)
        if not self.r.set(self.probe_key, "1", nx=True, px=self.probe_ms):
            raise CircuitOpen(self.provider, self.open_s)  # another call is the probe

    def failed(self) -> None:
        """The provider answered as if it were down (or did not answer)."""
        pipe = self.r.pipeline(transaction=True)
        pipe.hincrby(self.key, "failures", 1)
        pipe.hget(self.key, "open_until")
        pipe.expire(self.key, int(self.open_s * 4) + 60)
        count, until, _ = pipe.execute()
        if count >= self.failures or until:
            # The threshold reached, or a probe failed: (re)open.
            pipe = self.r.pipeline(transaction=True)
            pipe.hset(self.key, "open_until", time.time() + self.open_s)
            pipe.delete(self.probe_key)
            pipe.execute()

    def succeeded(self) -> None:
        if self.r.exists(self.key):
            self.r.delete(self.key, self.probe_key)

    def is_open(self) -> bool:
        return bool(self.r.hget(self.key, "open_until"))


def outage_status(status: int) -> bool:
    """An answer that says the provider is down."""
    return status >= 500


def send_through(breaker: CircuitBreaker | None, name: str, send: Callable[[], requests.Response],
                 is_outage: Callable[[int], bool] = outage_status) -> requests.Response:
    """`send()`, the request, once the breaker lets it out (else CircuitOpen).
    A request that gets no answer (a network error) counts against the
    breaker and raises ProviderUnavailable("<name>: <the error's class>");
    an answer counts against it when `is_outage(status)`, for it otherwise,
    and is returned for the caller to read."""
    if breaker:
        breaker.before_call()
    try:
        resp = send()
    except requests.RequestException as exc:
        if breaker:
            breaker.failed()
        raise ProviderUnavailable(f"{name}: {type(exc).__name__}") from None
    if breaker:
        if is_outage(resp.status_code):
            breaker.failed()
        else:
            breaker.succeeded()
    return resp
