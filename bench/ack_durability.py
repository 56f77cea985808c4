"""What "acknowledged means durable" costs: the Outbound Message receiver
under the ingest benchmark's load (bench/ingest.py: wrk, messages of 100
unique notifications, the Procfile's gunicorn), on one Redis with and
without WAITAOF, and on a Sentinel-managed master and replica with and
without WAIT 1. No workers run.

    apt-get install wrk
    .venv/bin/python bench/ack_durability.py [--seconds 8] [--connections 16] [--per-message 100] [--repeat 1]

The Sentinel cases run five servers (the master with appendfsync always, a
replica, three Sentinels) on the same cores: compare them with each other,
and the one-Redis cases with each other.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from ingest import envelope_parts, serve, stop, wrk

from crm_enrich.dev.devstack import EmbeddedRedis, Stack
from crm_enrich.redis_connection import AckDurability

# (name, Redis: "fsync always" | "fsync everysec" | "sentinel", environment)
CASES = [
    ("one Redis, appendfsync everysec, ACK on the write", "everysec", {"REDIS_ACK_FSYNC": "false"}),
    ("one Redis, appendfsync everysec, ACK after WAITAOF", "everysec", {}),
    ("one Redis, appendfsync always, ACK after WAITAOF", "always", {}),
    ("Sentinel, master + replica, ACK on the write", "sentinel", {"REDIS_ACK_REPLICAS": "0"}),
    ("Sentinel, master + replica, ACK after WAIT 1", "sentinel", {}),
]


def one_ack_ms(stack: Stack, redis_kind: str, env: dict, n: int = 300) -> float:
    """The median time of one intake-sized pipeline (a few writes) plus
    what the acknowledgement waits for, on one connection: the wait's own
    cost, without the web app's."""
    client = stack.redis_client()
    durability = AckDurability(sentinel=redis_kind == "sentinel", replicas=int(env.get("REDIS_ACK_REPLICAS", 1)),
                               timeout_ms=1000, fsync=env.get("REDIS_ACK_FSYNC") != "false")
    times = []
    for i in range(n):
        pipe = client.pipeline(transaction=False)
        pipe.hset(f"bench:ack:{i}", mapping={"state": "received", "n": i})
        pipe.set(f"bench:ack:dedupe:{i}", i, ex=600)
        pipe.incr("bench:ack:count")
        started = time.perf_counter()
        durability.execute(pipe, client)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(tmp: Path, redis_kind: str, env: dict, args: argparse.Namespace) -> dict:
    embedded = None
    if redis_kind == "sentinel":
        stack = Stack(tmp, sentinel=True, extra_env=env)
    else:
        embedded = EmbeddedRedis(config={"appendfsync": redis_kind})
        stack = Stack(tmp, redis_url=embedded.url, extra_env=env)
    try:
        parts = tmp / "envelope"
        parts.mkdir()
        envelope_parts(stack.sandbox.info["salesforce_org_id"], parts)
        ack_ms = one_ack_ms(stack, redis_kind, env)
        proc, url = serve(stack, "web:create_app()", "receiver")
        try:
            wrk(url, parts, 2, args.connections, args.per_message, stack.outbound_token)  # warm-up
            return wrk(url, parts, args.seconds, args.connections, args.per_message, stack.outbound_token) | {
                "one_ack_ms": ack_ms}
        finally:
            stop(proc)
    finally:
        stack.stop()
        if embedded:
            embedded.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--per-message", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=1, help="measure each case this many times, in turn")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in CASES}
    for _ in range(args.repeat):
        for name, redis_kind, env in CASES:
            with tempfile.TemporaryDirectory() as tmp:
                result = measure(Path(tmp), redis_kind, env, args)
            print(f"{name}: {json.dumps(result)}", flush=True)
            runs[name].append(result)

    def mean(name: str, key: str) -> float:
        return sum(r[key] for r in runs[name]) / len(runs[name])

    print(f"Acknowledgement durability: {args.per_message} unique notifications a message, {args.connections} "
          f"connections, {args.seconds:.0f} s a case, {args.repeat} run(s) each (means), gunicorn as in the "
          f"Procfile, no workers")
    print(f"  {'':52}{'messages/s':>11}{'p50 ms':>8}{'p99 ms':>8}{'errors':>8}{'one ack ms':>12}")
    for name in runs:
        print(f"  {name:52}{mean(name, 'rate'):>11.0f}{mean(name, 'p50_ms'):>8.1f}{mean(name, 'p99_ms'):>8.1f}"
              f"{mean(name, 'errors'):>8.0f}{mean(name, 'one_ack_ms'):>12.2f}")
    print("  one ack ms: the median of an intake-sized pipeline and its wait on one quiet connection")


if __name__ == "__main__":
    main()
