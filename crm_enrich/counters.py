"""Counters for /metrics, kept in one Redis hash so that every gunicorn
process and every worker adds to the same numbers and any web process can
report them (prometheus_client's own counters live in one process)."""
from __future__ import annotations

import redis

from crm_enrich import keys
from crm_enrich.redis_typing import text_hash

KEY = keys.METRICS_COUNTERS
LATENCY_BUCKETS = (1, 2, 5, 10, 30, 60, 300, 1800, 7200)


def _field(name: str, labels: dict) -> str:
    return name + "".join(f"|{k}={v}" for k, v in sorted(labels.items()))


def incr(client: redis.Redis, name: str, amount: float = 1, **labels) -> None:
    client.hincrbyfloat(KEY, _field(name, labels), amount)


def observe(client: redis.Redis, name: str, seconds: float, **labels) -> None:
    """One observation of a histogram (cumulative buckets, Prometheus style)."""
    pipe = client.pipeline(transaction=False)
    for le in LATENCY_BUCKETS:
        if seconds <= le:
            pipe.hincrbyfloat(KEY, _field(f"{name}_bucket", {**labels, "le": le}), 1)
    pipe.hincrbyfloat(KEY, _field(f"{name}_bucket", {**labels, "le": "+Inf"}), 1)
    pipe.hincrbyfloat(KEY, _field(f"{name}_sum", labels), seconds)
    pipe.hincrbyfloat(KEY, _field(f"{name}_count", labels), 1)
    pipe.execute()


def read(client: redis.Redis) -> list[tuple[str, dict, float]]:
    out: list[tuple[str, dict, float]] = []
    for field, value in text_hash(client.hgetall(KEY)).items():
        name, *pairs = field.split("|")
        out.append((name, dict(p.split("=", 1) for p in pairs), float(value)))
    return out
