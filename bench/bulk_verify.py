"""The same re-verification of N addresses by Clearout, twice: as one bulk
list (the run is over CLEAROUT_BULK_THRESHOLD), and with one instant call
per address (lists off). Each on a fresh stack with the production
defaults for the sweeper and the list's polls (30 s, 60 s), Clearout's
per-minute limit set to a plan's (the sandbox processes a list at 50 rows a
second; Clearout publishes no speed, so that figure is the simulator's).

Prints, for each: the time from the run's start to its last job final, the
Clearout requests made (by endpoint, 429s included) and the credits spent.

    .venv/bin/python bench/bulk_verify.py [--records 2000] [--rpm 240] [--mode both|bulk|instant]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from crm_enrich import keys
from crm_enrich.dev.devstack import Stack, wait_for
from crm_enrich.jobs.store import JobStore
from crm_enrich.operations import reverify, runs
from crm_enrich.sandbox.control import SandboxControl
from crm_enrich.sandbox.dataset import build_dataset

CHUNK = 5000


def contacts(n: int) -> list[dict]:
    """n Contacts whose verdict is 100 days old (distinct addresses, cycling
    through the dataset's people with a numbered local part beyond it)."""
    people = [p for p in build_dataset().people if p.email]
    old = (datetime.now(UTC) - timedelta(days=100)).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    out = []
    for i in range(n):
        p = people[i % len(people)]
        local, domain = p.email.split("@")
        email = p.email if i < len(people) else f"{local}.{i}@{domain}"
        out.append({"FirstName": p.first_name, "LastName": p.last_name, "Email": email,
                    "Email_Verified_At__c": old, "Email_Verification_Status__c": "valid"})
    return out


def measure(mode: str, n: int, rpm: int) -> dict:
    env = {"VERIFY_PROVIDER": "clearout", "REVERIFY_AFTER_DAYS": "30", "REVERIFY_INTERVAL_S": "2",
           "REVERIFY_MAX_PER_RUN": str(n),
           "CLEAROUT_BULK_THRESHOLD": str(n - 1 if mode == "bulk" else 0)}
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp), worker_concurrency=4, extra_env=env)
        control = SandboxControl(stack.sandbox.info)
        control.clearout_config(rate_limit_per_minute=rpm, credits=10 * n)
        control.salesforce_config(api_allocation=1_000_000)
        records = contacts(n)
        for i in range(0, n, CHUNK):
            control.create_records("Contact", records[i:i + CHUNK], fire_outbound=False)
        try:
            stack.start()
            store = JobStore(stack.redis_client())
            run_id = wait_for(lambda: store.r.lindex(reverify.RUNS_KEY, 0), 120, "the re-verification run")

            def finished():
                run = runs.get_run(store, run_id)
                return run if run and run["status"] == "finished" and run["queued"] == n else None

            run = wait_for(finished, 7200, "the run to finish", interval=1.0)
            took = time.time() - run["createdAt"]
            log = control.log("clearout")
            # Where a list's time went: collecting until uploaded, at Clearout until read.
            phases = {}
            for lst in store.r.smembers(keys.clearout_run_lists(run_id)):
                info = store.r.hgetall(keys.clearout_list(lst))
                phases = {"uploaded": float(info["uploaded_at"]) - run["createdAt"],
                          "read": float(info["finished_at"]) - run["createdAt"]}
            credits = control.clearout_usage()["credits_spent"]
        finally:
            stack.stop()
    by_path = Counter("result file" if e["path"].startswith("/results/") else e["path"].removeprefix("/v2/")
                      for e in log)
    return {"mode": mode, "seconds": took, "phases": phases, "requests": len(log), "by_path": by_path,
            "rate_limited": sum(1 for e in log if e["status"] == 429), "credits": credits, "jobs": run["jobs"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--rpm", type=int, default=240, help="Clearout's requests per minute (a plan's limit)")
    parser.add_argument("--mode", choices=("both", "bulk", "instant"), default="both")
    args = parser.parse_args()
    modes = ["bulk", "instant"] if args.mode == "both" else [args.mode]
    results = [measure(mode, args.records, args.rpm) for mode in modes]
    print(f"Re-verification of {args.records:,} addresses by Clearout, {args.rpm} requests/minute, "
          f"4 worker processes")
    for res in results:
        paths = ", ".join(f"{path} {count:,}" for path, count in res["by_path"].most_common())
        print(f"  {res['mode']:>7}: {res['seconds']:7.0f} s to finish, {res['requests']:,} Clearout requests "
              f"({paths}; {res['rate_limited']:,} answered 429), {res['credits']:,} credits; jobs "
              + ", ".join(f"{k} {v:,}" for k, v in sorted(res["jobs"].items())))
        if res["phases"]:
            print(f"           the list: uploaded after {res['phases']['uploaded']:.0f} s (every job had come to "
                  f"it), its result read after {res['phases']['read']:.0f} s")
        else:
            print(f"           the floor Clearout's limit sets: {args.records / args.rpm * 60:.0f} s")
    if len(results) == 2:
        bulk, instant = results
        print(f"  bulk vs instant: {instant['seconds'] / max(bulk['seconds'], 1):.1f}x faster, "
              f"{instant['requests'] / max(bulk['requests'], 1):.0f}x fewer requests")


if __name__ == "__main__":
    main()
