"""Salesforce API calls per 1,000 enriched records, batched (crm-enrich) and
naive (one read and one write per record), and the time from a record's
creation to its write-back. Runs everything on the sandbox.

    .venv/bin/python bench/salesforce_calls.py [--records 1000]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import requests
from simple_salesforce import Salesforce

from crm_enrich.dev.devstack import Stack, wait_for
from crm_enrich.jobs.store import FINAL_STATES, JobStore
from crm_enrich.sandbox.control import SandboxControl
from crm_enrich.sandbox.dataset import demo_contacts

# Clodura limits scaled up for the run (this benchmark is about Salesforce).
FAST_CLODURA = [[200, 1], [12000, 60], [1000000, 86400]]


def kind(path: str) -> str:
    for part, name in (("/query", "SOQL query"), ("/composite/sobjects", "collections update"),
                       ("/limits", "limits"), ("/describe", "describe"), ("/oauth2/token", "token")):
        if part in path:
            return name
    return "other"


def run_batched(stack: Stack, control: SandboxControl, n: int) -> dict:
    store = JobStore(stack.redis_client())
    mix = demo_contacts(n, seed=1000)
    companies = sorted({c["_company"] for c in mix})
    accounts = control.create_accounts(companies)
    contacts = [{k: v for k, v in c.items() if not k.startswith("_")} | {"AccountId": accounts[c["_company"]]}
                for c in mix]
    used_before = control.salesforce_usage()["api_used"]
    mark = max([e["seq"] for e in control.log("salesforce")] or [0])
    created_at = time.time()
    ids = control.create_records("Contact", contacts)

    def all_final():
        done = 0
        for rid in ids:
            job_id = store.r.get(f"record:Contact:{rid}:last_job")
            if job_id and store.get(job_id).state in FINAL_STATES:
                done += 1
        return done == len(ids)

    wait_for(all_final, 1800, f"{n} records to be final", interval=1.0)
    elapsed = time.time() - created_at
    latencies = []
    for rid in ids:
        writes = control.record("Contact", rid)["writes"]
        if writes:
            latencies.append(writes[0]["t"] - created_at)
    calls = Counter(kind(e["path"]) for e in control.log("salesforce", since=mark))
    states = Counter()
    for rid in ids:
        job = store.get(store.r.get(f"record:Contact:{rid}:last_job"))
        states[job.state if job.state != "skipped" else f"skipped ({job.last_error})"] += 1
    return {"api_calls": control.salesforce_usage()["api_used"] - used_before, "calls": calls,
            "elapsed": elapsed, "latencies": latencies, "ids": ids, "states": states}


def run_naive(control: SandboxControl, info: dict, ids: list[str]) -> int:
    """The same records, read and written one at a time (GET + PATCH each)."""
    session = requests.Session()
    session.request = lambda *a, _r=session.request, **kw: _r(*a, **{**kw, "verify": info["ca_bundle"]})
    token = session.post(f"{info['salesforce_url']}/services/oauth2/token", data={"grant_type": "client_credentials"},
                         auth=(info["salesforce_client_id"], info["salesforce_client_secret"])).json()
    sf = Salesforce(instance_url=token["instance_url"], session_id=token["access_token"], session=session)
    before = control.salesforce_usage()["api_used"]
    for rid in ids:
        record = sf.Contact.get(rid)
        sf.restful(f"sobjects/Contact/{rid}", method="PATCH",
                   json={"Enriched_At__c": record["Enriched_At__c"] or "2026-11-21T00:00:00.000Z"})
    return control.salesforce_usage()["api_used"] - before


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1000)
    args = parser.parse_args()
    n = args.records
    with tempfile.TemporaryDirectory() as tmp, Stack(
            Path(tmp), worker_concurrency=4,
            extra_env={"CLODURA_RATE_LIMITS": "200/second;12000/minute;1000000/day"}) as stack:
        info = stack.sandbox.info
        control = SandboxControl(info)
        control.http.post(f"{control.clodura}/_sandbox/clodura/config",
                          json={"rate_limits": {info["clodura_api_key"]: FAST_CLODURA}}).raise_for_status()
        batched = run_batched(stack, control, n)
        naive = run_naive(control, info, batched["ids"])

    lat = sorted(batched["latencies"])
    per_k = lambda calls: calls * 1000 / n  # noqa: E731
    print(f"Salesforce API calls for {n} thin records (Outbound Messages carry no enrichment fields)")
    print(f"  {'':32}{'crm-enrich (batched)':>22}{'naive (read+write each)':>26}")
    print(f"  {'API calls, total':32}{batched['api_calls']:>22}{naive:>26}")
    print(f"  {'API calls per 1,000 records':32}{per_k(batched['api_calls']):>22.1f}{per_k(naive):>26.1f}")
    print("  batched calls by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(batched["calls"].items())))
    print(f"  records written back: {len(lat)} of {n} in {batched['elapsed']:.1f}s; final states: "
          + ", ".join(f"{k} {v}" for k, v in batched["states"].most_common()))
    print("  (token requests are not counted by Salesforce; the 3 describe calls a worker makes at start-up,"
          " cached for a day, are not in the figure)")
    if lat:
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
        print(f"  creation → write-back: median {statistics.median(lat):.1f}s, p95 {p95:.1f}s")


if __name__ == "__main__":
    main()
