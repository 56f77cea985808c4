"""Time from a record's creation to its write-back, and Salesforce API calls
per record, for the two regimes side by side on the sandbox (Clodura's
limits raised so they do not bind; 4 worker processes as in the Procfile):

- trickle: Contacts created one at a time, evenly spread (30 over 60 s by
  default), each with an Account of its own created just before it (the
  org sends the Account's Outbound Message, then the Contact's);
- flood: 400 Contacts created at once (the org sends them as 4 Outbound
  Messages of 100) on 85 Accounts.

    .venv/bin/python bench/latency.py [--mode both|trickle|flood] [--trickle 30 --over 60]
                                      [--flood 400 --accounts 85] [--undeclared] [--accounts-upfront]
                                      [--ingest outbound_message|cdc]

The stack declares what the org's Outbound Messages send
(SALESFORCE_OUTBOUND_FIELDS), so a record its message describes is not
read; --undeclared leaves the declaration out (every job reads). With
--ingest cdc the org sends no Outbound Message: the records come in as
change events through the CDC subscriber (a CREATE's values stand for the
read, as a declared message's do), and the change events delivered are
counted.
"""
from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

from crm_enrich.dev.devstack import Stack, declared_outbound_fields, wait_for
from crm_enrich.jobs.store import FINAL_STATES, JobStore
from crm_enrich.sandbox.control import SandboxControl
from crm_enrich.sandbox.dataset import demo_contacts

FAST_CLODURA = [[200, 1], [12000, 60], [1000000, 86400]]
FAST_ENV = {"CLODURA_RATE_LIMITS": "200/second;12000/minute;1000000/day"}


def kind(path: str) -> str:
    for part, name in (("/query", "read"), ("/composite/sobjects", "write"), ("/limits", "limits"),
                       ("/describe", "describe")):
        if part in path:
            return name
    return "other"


def start(tmp: str, declared: bool, ingest: str = "outbound_message") -> tuple[Stack, SandboxControl]:
    stack = Stack(Path(tmp), worker_concurrency=4,
                  extra_env={**FAST_ENV, **(declared_outbound_fields() if declared else {}),
                             "SALESFORCE_INGEST": ingest})
    stack.start()
    control = SandboxControl(stack.sandbox.info)
    control.http.post(f"{control.clodura}/_sandbox/clodura/config", json={
        "rate_limits": {stack.sandbox.info["clodura_api_key"]: FAST_CLODURA}}).raise_for_status()
    return stack, control


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def wait_final(store: JobStore, watched: list[tuple[str, str]], timeout: float) -> None:
    def final() -> bool:
        for obj, rid in watched:
            job_id = store.r.get(f"record:{obj}:{rid}:last_job")
            job = store.get(job_id) if job_id else None
            if job is None or job.state not in FINAL_STATES:
                return False
        return True

    wait_for(final, timeout, "every record's jobs to be final", interval=0.5)


def measure(stack: Stack, control: SandboxControl, created: list[tuple[str, float]],
            accounts: list[str], mark: int, used_before: int) -> dict:
    store = JobStore(stack.redis_client())
    wait_final(store, [("Contact", rid) for rid, _ in created] + [("Account", a) for a in accounts], 600)
    latencies = []
    for rid, t in created:
        writes = control.record("Contact", rid)["writes"]
        if writes:
            latencies.append(writes[0]["t"] - t)
    accounts_written = sum(1 for a in accounts if control.record("Account", a)["writes"])
    entries = [e for e in control.log("salesforce", since=mark) if kind(e["path"]) in ("read", "write")]
    calls = Counter(kind(e["path"]) for e in entries)
    t0 = created[0][1] if created else 0.0
    trace = [f"{e['t'] - t0:6.2f}s {kind(e['path'])} {e.get('object', 'mixed')} {e.get('records', '?')}"
             for e in entries]
    states = Counter(store.get(store.r.get(f"record:Contact:{rid}:last_job")).state for rid, _ in created)
    events = control.pubsub_events()["delivered"] if stack.cdc else None
    return {"latencies": latencies, "api_calls": control.salesforce_usage()["api_used"] - used_before,
            "change_events": events,
            "calls": calls, "contacts": len(created), "accounts": len(accounts),
            "accounts_written": accounts_written, "states": states, "trace": trace}


def contacts_with_accounts(control: SandboxControl, n: int, n_accounts: int | None, seed: int) -> list[dict]:
    mix = demo_contacts(n, seed=seed)
    names = sorted({c["_company"] for c in mix})[:n_accounts] if n_accounts else sorted({c["_company"] for c in mix})
    ids = control.create_accounts(names)
    order = list(ids.values())
    return [{k: v for k, v in c.items() if not k.startswith("_")}
            | {"AccountId": ids.get(c["_company"]) or order[i % len(order)]} for i, c in enumerate(mix)]


def trickle(control: SandboxControl, stack: Stack, n: int, over_s: float, accounts_upfront: bool) -> dict:
    """Each Contact's Account is created (with its Outbound Message, as a
    person creating it in the org fires one) just before the Contact; with
    `accounts_upfront`, every Account is created at the start, quietly (no
    Outbound Message), as this benchmark did before SALESFORCE_OUTBOUND_FIELDS:
    nothing recent is known of a Contact's Account, so each Contact is read
    for its Account's fields."""
    people = demo_contacts(n, seed=2024)
    upfront = contacts_with_accounts(control, n, None, seed=2024) if accounts_upfront else None
    mark = max([e["seq"] for e in control.log("salesforce")] or [0])
    used = control.salesforce_usage()["api_used"]
    created, accounts, gap = [], [], over_s / n
    t0 = time.monotonic()
    for i, person in enumerate(people):
        time.sleep(max(0.0, t0 + i * gap - time.monotonic()))
        if upfront is not None:
            contact = upfront[i]
        else:
            (account_id,) = control.create_records("Account", [{"Name": person["_company"]}])
            contact = {k: v for k, v in person.items() if not k.startswith("_")} | {"AccountId": account_id}
        t = time.time()
        (rid,) = control.create_records("Contact", [contact])
        created.append((rid, t))
        accounts.append(contact["AccountId"])
    return measure(stack, control, created, sorted(set(accounts)), mark, used)


def flood(control: SandboxControl, stack: Stack, n: int, n_accounts: int) -> dict:
    contacts = contacts_with_accounts(control, n, n_accounts, seed=1000)
    mark = max([e["seq"] for e in control.log("salesforce")] or [0])
    used = control.salesforce_usage()["api_used"]
    t = time.time()
    ids = control.create_records("Contact", contacts)
    return measure(stack, control, [(rid, t) for rid in ids], sorted({c["AccountId"] for c in contacts}),
                   mark, used)


def report(name: str, result: dict, trace: bool = False) -> None:
    n_accounts = result["accounts"]
    lat = result["latencies"]
    n = result["contacts"]
    calls = result["calls"]
    floor = 2 * (math.ceil(n / 200) + math.ceil(n_accounts / 200))
    print(f"{name}: {n} Contacts, {n_accounts} Accounts; written back: {len(lat)} Contacts, "
          f"{result['accounts_written']} Accounts; Contact jobs: "
          + ", ".join(f"{k} {v}" for k, v in result["states"].most_common()))
    if lat:
        print(f"  creation → write-back: median {statistics.median(lat):.2f}s, p95 {percentile(lat, 0.95):.2f}s, "
              f"max {max(lat):.2f}s")
    print(f"  Salesforce calls: {result['api_calls']} ({calls['read']} reads, {calls['write']} writes), "
          f"{result['api_calls'] / n:.2f} per Contact (Accounts included); floor at 200 a call: {floor}")
    if result["change_events"] is not None:
        print(f"  change events delivered: {result['change_events']} (the org's event delivery allocation)")
    if trace:  # each call: seconds since the first creation, kind, object, records
        for line in result["trace"]:
            print("   ", line)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=("both", "trickle", "flood"), default="both")
    parser.add_argument("--trickle", type=int, default=30, help="Contacts created one at a time")
    parser.add_argument("--over", type=float, default=60, help="seconds the trickle is spread over")
    parser.add_argument("--flood", type=int, default=400, help="Contacts created at once")
    parser.add_argument("--accounts", type=int, default=85, help="Accounts the flood's Contacts belong to")
    parser.add_argument("--trace", action="store_true", help="list every read and write call")
    parser.add_argument("--accounts-upfront", action="store_true",
                        help="trickle: create every Account at the start (this benchmark's trickle before)")
    parser.add_argument("--undeclared", action="store_true",
                        help="no SALESFORCE_OUTBOUND_FIELDS: every job reads its record")
    parser.add_argument("--ingest", choices=("outbound_message", "cdc"), default="outbound_message",
                        help="cdc: the records come in as change events through the CDC subscriber")
    args = parser.parse_args()
    results: dict[str, dict] = {}
    for mode in ("trickle", "flood"):
        if args.mode not in (mode, "both"):
            continue
        with tempfile.TemporaryDirectory() as tmp:  # a fresh stack: no regime warms the other's caches
            stack, control = start(tmp, declared=not args.undeclared, ingest=args.ingest)
            try:
                if mode == "trickle":
                    results[mode] = trickle(control, stack, args.trickle, args.over, args.accounts_upfront)
                else:
                    results[mode] = flood(control, stack, args.flood, args.accounts)
            finally:
                stack.stop()
        report(mode, results[mode], args.trace)


if __name__ == "__main__":
    main()
