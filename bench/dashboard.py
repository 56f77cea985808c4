"""What one load of the dashboard's overview costs Redis with a large job
history behind it: the number of Redis commands and the time, counted with
INFO stats (total_commands_processed) before and after, on an embedded
Valkey filled with N jobs (default 100,000) spread over the last 7 days.

    .venv/bin/python bench/dashboard.py [--jobs 100000]
"""
from __future__ import annotations

import argparse
import random
import time
import uuid

from crm_enrich.dev.devstack import EmbeddedRedis
from crm_enrich.jobs.state import State
from crm_enrich.jobs.store import JobStore
from crm_enrich.operations import views
from crm_enrich.settings import load_settings

STATES = [State.DONE] * 85 + [State.SKIPPED] * 8 + [State.FAILED] * 4 + [State.DEFERRED] * 2 + [State.RECEIVED]


def fill(store: JobStore, n: int) -> None:
    rng = random.Random(7)
    now = time.time()
    pipe = store.r.pipeline(transaction=False)
    for i in range(n):
        job_id, state = uuid.uuid4().hex, rng.choice(STATES)
        at = now - rng.uniform(0, 7 * 86_400)
        pipe.hset(store.job_key(job_id), mapping={
            "id": job_id, "state": state, "object": "Contact", "record_id": f"003{i:015d}",
            "source": "outbound_message", "created_at": at, "updated_at": at, "attempts": 1,
            "last_error": "PROVIDER said no" if state == State.FAILED else ""})
        pipe.zadd(store.state_key(state), {job_id: at})
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def commands_processed(store: JobStore) -> int:
    return int(store.r.info("stats")["total_commands_processed"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args()
    redis = EmbeddedRedis()
    try:
        store = JobStore.from_url(redis.url)
        settings = load_settings(
            redis_url=redis.url, public_base_url="https://crm-enrich.example.com", clodura_api_key="bench-key",
            salesforce_login_url="https://login.example.com", salesforce_client_id="bench",
            salesforce_client_secret="bench", salesforce_org_id="00D000000000001",
            salesforce_webhook_secret="whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=",
            admin_token="x" * 16, secret_key="y" * 16, salesforce_outbound_token="z" * 32)
        started = time.perf_counter()
        fill(store, args.jobs)
        print(f"filled {args.jobs:,} jobs in {time.perf_counter() - started:.1f} s")
        costs, times = [], []
        for _ in range(args.loads):
            before = commands_processed(store)
            started = time.perf_counter()
            overview = views.overview(store, settings)
            times.append(time.perf_counter() - started)
            costs.append(commands_processed(store) - before - 1)  # less the second INFO itself
        print(f"jobs by state: { {str(state): n for state, n in overview['states'].items() if n} }")
        print(f"done in the last hour: {sum(b['done'] for b in overview['throughput'])}")
        print(f"Redis commands per dashboard load: {min(costs)} (of {args.loads} loads: {costs})")
        print(f"time per load: median {sorted(times)[len(times) // 2] * 1000:.0f} ms")
    finally:
        redis.stop()


if __name__ == "__main__":
    main()
