"""Quota use and credits over a backlog, crm-enrich's shared limiter and
cache against the naive setup (Celery's per-worker rate_limit, no cache),
with 4 worker processes on the sandbox whose Clodura limits are scaled up.

    .venv/bin/python bench/quota.py [--records 1000] [--per-second 20] [--per-minute 600]
"""
from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from crm_enrich.dev.devstack import Stack, wait_for
from crm_enrich.jobs.store import FINAL_STATES, JobStore
from crm_enrich.sandbox.clodura import reveal_email_result
from crm_enrich.sandbox.control import SandboxControl
from crm_enrich.sandbox.dataset import VERDICT_CATCH_ALL, build_dataset, demo_contacts


def backlog(n: int) -> list[dict]:
    """Demo-like Contacts; one in ten repeats an earlier person, as CRMs do."""
    base = demo_contacts(n, seed=4242)
    rng = random.Random(4242)
    for i in range(n // 10):
        base[-1 - i] = dict(base[rng.randrange(0, n - n // 10)])
    return base


def minimum_credits(contacts: list[dict]) -> float:
    """What the sandbox's prices (Max plan) allow for what the pipeline must
    ask, each distinct request paid once: an enrichment by email, name and
    company; a reveal for a record without an email; one verification per
    distinct address, deep on a catch-all domain (after the one standard
    check per such domain that shows it is one, unless the reveal said so);
    one organisation enrich with technographics (the default map's
    Technologies__c) per company Clodura knows."""
    ds = build_dataset()
    enrich, reveals, emails, orgs = {}, {}, {}, set()
    for c in contacts:
        person = ds.find_person(email=c.get("Email"), first_name=c["FirstName"], last_name=c["LastName"],
                                organisation_name=c["_company"])
        org = ds.company_by_name(c["_company"])
        enrich[(c.get("Email"), c["FirstName"], c["LastName"], c["_company"])] = \
            2 if person else (1 if org else 0)
        email, hint = c.get("Email"), None
        if not email and person:
            payload, reveals[person.person_id] = reveal_email_result("trk", "Max", person, person.person_id)
            email, hint = payload.get("email"), payload.get("emailStatus")
        if email:
            emails.setdefault(email.strip().lower(), hint)
        if org:
            orgs.add(org.organisation_id)
    verify, learnt = 0.0, set()
    for email, hint in emails.items():
        if ds.verdict_for_email(email) != VERDICT_CATCH_ALL:
            verify += 0.04
            continue
        domain = email.rsplit("@", 1)[-1]
        if hint != "catch_all" and domain not in learnt:
            verify += 0.04
        learnt.add(domain)
        verify += 0.1
    return sum(enrich.values()) + sum(reveals.values()) + verify + 2 * len(orgs)


def run(mode: str, n: int, per_second: int, per_minute: int) -> dict:
    env = {"CLODURA_RATE_LIMITS": f"{per_second}/second;{per_minute}/minute;1000000/day"}
    if mode == "naive":
        env |= {"CLODURA_LIMITER": "per_worker", "PROVIDER_CACHE_TTL_S": "0"}
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(Path(tmp), worker_concurrency=1, extra_env=env)
        try:
            stack.start()
            for i in range(2, 5):
                stack.start_worker(f"worker{i}", concurrency=1)
            info = stack.sandbox.info
            control = SandboxControl(info)
            control.http.post(f"{control.clodura}/_sandbox/clodura/config", json={"rate_limits": {
                info["clodura_api_key"]: [[per_second, 1], [per_minute, 60], [1000000, 86400]]}}).raise_for_status()
            contacts = backlog(n)
            companies = sorted({c["_company"] for c in contacts})
            accounts = control.create_accounts(companies)
            credits_before = control.clodura_usage()["creditsSpent"]
            started = time.time()
            ids = control.create_records("Contact", [
                {k: v for k, v in c.items() if not k.startswith("_")} | {"AccountId": accounts[c["_company"]]}
                for c in contacts])
            store = JobStore(stack.redis_client())

            # Every Contact, and every Account their jobs enrich, final.
            watched = [("Contact", rid) for rid in ids] + [("Account", aid) for aid in accounts.values()]

            def finished():
                return all((j := store.r.get(f"record:{obj}:{rid}:last_job")) and store.get(j).state in FINAL_STATES
                           for obj, rid in watched)

            wait_for(finished, 3600, "the backlog to drain", interval=2.0)
            elapsed = time.time() - started
            log = [e for e in control.log("clodura") if e["path"].startswith("/api/v1/") and e["t"] >= started]
            usage = control.clodura_usage()
            states = {}
            for rid in ids:
                state = store.get(store.r.get(f"record:Contact:{rid}:last_job")).state
                states[state] = states.get(state, 0) + 1
        finally:
            stack.stop()
    accepted = sorted(e["t"] for e in log if e["status"] not in (429, 409))
    first, last = accepted[0], accepted[-1]
    windows = []
    t = first
    while t + 60 <= last:
        windows.append(sum(1 for x in accepted if t <= x < t + 60) / per_minute)
        t += 5
    return {
        "elapsed": elapsed,
        "requests": len(log),
        "accepted": len(accepted),
        "429s": sum(1 for e in log if e["status"] == 429),
        "minute_share": sum(windows) / len(windows) if windows else float("nan"),
        "calls_per_record": len(log) / n,
        "credits": usage["creditsSpent"] - credits_before,
        "states": states,
        "minimum": minimum_credits(contacts),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--per-second", type=int, default=20)
    parser.add_argument("--per-minute", type=int, default=600)
    args = parser.parse_args()
    results = {}
    for mode in ("crm-enrich", "naive"):
        results[mode] = run(mode, args.records, args.per_second, args.per_minute)
        print(f"{mode}: {results[mode]}", flush=True)
    a, b = results["crm-enrich"], results["naive"]
    print(f"Clodura quota and credits: {args.records} Contacts (10% repeat a person), 4 worker processes, "
          f"sandbox limits {args.per_second}/s and {args.per_minute}/min")
    print(f"  {'':44}{'crm-enrich':>14}{'naive':>14}")
    rows = [
        ("share of the minute window used (backlog)", f"{a['minute_share']:.1%}", f"{b['minute_share']:.1%}"),
        ("429 answers from the sandbox", a["429s"], b["429s"]),
        ("Clodura requests sent", a["requests"], b["requests"]),
        ("calls per record", f"{a['calls_per_record']:.2f}", f"{b['calls_per_record']:.2f}"),
        ("credits spent", f"{a['credits']:.2f}", f"{b['credits']:.2f}"),
        ("minimum the contract's costs allow", f"{a['minimum']:.2f}", f"{b['minimum']:.2f}"),
        ("time to drain the backlog", f"{a['elapsed']:.0f}s", f"{b['elapsed']:.0f}s"),
        ("final states", ", ".join(f"{k} {v}" for k, v in a["states"].items()),
         ", ".join(f"{k} {v}" for k, v in b["states"].items())),
    ]
    for label, x, y in rows:
        print(f"  {label:44}{str(x):>14}{str(y):>14}")


if __name__ == "__main__":
    main()
