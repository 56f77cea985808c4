"""The one backoff formula: exponential, capped, with full jitter unless a
caller needs a predictable schedule (polls, selection retries)."""
from __future__ import annotations

import random


def backoff_s(attempt: int, base: float = 2.0, cap: float = 120.0, jitter: bool = True) -> float:
    """Seconds to wait before attempt `attempt` + 1: up to `base` × 2^attempt,
    at most `cap`. Full jitter spreads retries of many jobs that failed
    together (an outage) instead of sending them back in step."""
    ceiling = min(cap, base * 2 ** attempt)
    return random.uniform(0, ceiling) if jitter else ceiling
