"""A backfill of N Contacts on the sandbox, Clodura's limits raised so that
Redis and the workers are what is measured (4 worker processes as in the
Procfile). While it drains, a few Contacts are created one at a time, as
live work that must overtake the bulk.

Prints Redis peak memory and bytes per job, worker RSS, the time to drain
against the floor the shared limiter allows for the Clodura calls made, and
the creation → write-back latency of the live Contacts.

    .venv/bin/python bench/backfill.py [--records 5000] [--per-second 100] [--live 10 --live-over 30] [--undeclared]
"""
from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import tempfile
import threading
import time
from pathlib import Path

import requests

from crm_enrich.dev.devstack import Stack, declared_outbound_fields, wait_for
from crm_enrich.jobs.store import FINAL_STATES, JobStore
from crm_enrich.sandbox.control import SandboxControl
from crm_enrich.sandbox.dataset import demo_contacts

CHUNK = 5000  # records a sandbox create call


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree(pid: int) -> list[int]:
    """The process and its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):  # it ended meanwhile
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
    return out


def backfill_contacts(n: int) -> list[dict]:
    """n Contacts: the sandbox's demo mix, 3,000 distinct people at most;
    beyond that the same people again (new records, so new jobs, reads and
    writes; the response cache answers their Clodura requests)."""
    people = [{k: v for k, v in c.items() if not k.startswith("_")} for c in demo_contacts(min(n, 3000), seed=77)]
    return [dict(people[i % len(people)]) for i in range(n)]


class Sampler(threading.Thread):
    """Redis memory and the workers' RSS, every half second, keeping peaks."""

    def __init__(self, stack: Stack):
        super().__init__(daemon=True)
        self.r, self.worker = stack.redis_client(), stack.processes["worker"].pid
        self.redis_peak = self.rss_peak = self.processes = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            self.redis_peak = max(self.redis_peak, self.r.info("memory")["used_memory"])
            pids = tree(self.worker)
            total = sum(rss_kib(p) for p in pids)
            if total > self.rss_peak:
                self.rss_peak, self.processes = total, len(pids)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--per-second", type=int, default=100, help="Clodura limit (and the limiter's floor)")
    parser.add_argument("--live", type=int, default=10, help="Contacts created during the backfill")
    parser.add_argument("--live-over", type=float, default=30, help="seconds the live Contacts are spread over")
    parser.add_argument("--undeclared", action="store_true",
                        help="no SALESFORCE_OUTBOUND_FIELDS: the live Contacts' jobs read their records")
    args = parser.parse_args()
    n, rate = args.records, args.per_second
    limits = [[rate, 1], [rate * 60, 60], [10_000_000, 86400]]
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp), worker_concurrency=4, extra_env={
            "CLODURA_RATE_LIMITS": f"{rate}/second;{rate * 60}/minute;10000000/day",
            # As the demo and bench/latency.py: the org's Outbound Messages
            # declare their fields, so a live Contact is not read.
            **({} if args.undeclared else declared_outbound_fields())})
        try:
            stack.start()
            info = stack.sandbox.info
            control = SandboxControl(info)
            control.http.post(f"{control.clodura}/_sandbox/clodura/config", json={
                "rate_limits": {info["clodura_api_key"]: limits}}).raise_for_status()
            control.salesforce_config(api_allocation=1_000_000)
            r = stack.redis_client()
            store = JobStore(r)
            contacts = backfill_contacts(n)
            for i in range(0, n, CHUNK):
                control.create_records("Contact", contacts[i:i + CHUNK], fire_outbound=False)
            live_people = [{k: v for k, v in c.items() if not k.startswith("_")}
                           for c in demo_contacts(args.live, seed=78)]
            baseline = r.info("memory")["used_memory"]
            mark = max([e["seq"] for e in control.log("clodura")] or [0])
            sampler = Sampler(stack)
            sampler.start()

            started = time.time()
            resp = requests.post(f"{stack.web_url}/admin/backfill", timeout=30,
                                 headers={"Authorization": f"Bearer {stack.admin_token}"},
                                 json={"object": "Contact", "where": "Title = null"})
            resp.raise_for_status()
            run_id = resp.json()["runId"]

            def run_state() -> dict:
                return requests.get(f"{stack.web_url}/admin/runs/{run_id}", timeout=30,
                                    headers={"Authorization": f"Bearer {stack.admin_token}"}).json()

            queued = wait_for(lambda: (s := run_state())["status"] == "queued" and s, 600, "the backfill queued")
            queued_s = time.time() - started
            # Live records, one at a time, while the bulk drains.
            live, gap = [], args.live_over / max(1, args.live)
            for person in live_people:
                t = time.time()
                (rid,) = control.create_records("Contact", [person])
                live.append((rid, t))
                time.sleep(gap)

            last_note = [time.time()]

            def drained() -> bool:
                state = run_state()
                if time.time() - last_note[0] >= 30:  # progress, for a run too long to wait out
                    last_note[0] = time.time()
                    print(f"  … {time.time() - started:.0f}s: {state['finished']:,} of {state['queued']:,} "
                          f"finished; Redis peak {sampler.redis_peak / 2**20:.1f} MiB, worker RSS peak "
                          f"{sampler.rss_peak / 1024:.0f} MiB", flush=True)
                return state["finished"] >= state["queued"]

            wait_for(drained, 3600, "the backfill to drain", interval=2.0)
            drain_s = time.time() - started
            for rid, _ in live:
                wait_for(lambda rid=rid: (j := r.get(f"record:Contact:{rid}:last_job"))
                         and store.get(j).state in FINAL_STATES, 300, "a live record to be final")
            sampler.stopped.set()
            sampler.join()
            latencies = [w[0]["t"] - t for rid, t in live if (w := control.record("Contact", rid)["writes"])]
            clodura_calls = sum(1 for e in control.log("clodura", since=mark) if e["path"].startswith("/api/v1/"))
            final = run_state()
            end_memory = r.info("memory")["used_memory"]
        finally:
            stack.stop()

    floor_s = clodura_calls / rate
    print(f"Backfill of {n:,} Contacts ({min(n, 3000):,} distinct people; selection 'Title = null'), "
          f"4 worker processes, Clodura at {rate}/s")
    print(f"  jobs queued: {queued['queued']:,} in {queued_s:.1f}s; final states: "
          + ", ".join(f"{k} {v}" for k, v in sorted(final["jobs"].items())))
    print(f"  Redis: peak {sampler.redis_peak / 2**20:.1f} MiB over a {baseline / 2**20:.1f} MiB baseline, "
          f"{(sampler.redis_peak - baseline) / max(1, queued['queued']):,.0f} bytes per job at the peak; "
          f"{end_memory / 2**20:.1f} MiB once drained")
    print(f"  worker RSS: peak {sampler.rss_peak / 1024:.0f} MiB over {sampler.processes} processes "
          f"(the main process and its pool)")
    print(f"  time to drain: {drain_s:.0f}s; the limiter's floor for the {clodura_calls:,} Clodura calls made: "
          f"{floor_s:.0f}s ({drain_s / floor_s:.1f}× the floor)" if floor_s else f"  time to drain: {drain_s:.0f}s")
    if latencies:
        print(f"  live Contacts created during the backfill ({len(latencies)} written of {len(live)}): "
              f"creation → write-back median {statistics.median(latencies):.2f}s, "
              f"p95 {percentile(latencies, 0.95):.2f}s, max {max(latencies):.2f}s")


if __name__ == "__main__":
    main()
