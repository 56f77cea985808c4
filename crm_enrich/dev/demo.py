"""`crm-enrich demo`: the whole flow on the sandbox. Contacts are created in
the simulated org, which sends Outbound Messages to our web app; the worker
enriches, verifies and writes them back; we watch until every record is
final, then print a before/after table and a summary."""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console

from crm_enrich import counters, keys, redis_typing
from crm_enrich.console import JobProgress, make_console, print_table
from crm_enrich.dev.devstack import Stack, declared_outbound_fields
from crm_enrich.jobs.state import SkipReason, State
from crm_enrich.jobs.store import FINAL_STATES, Job, JobStore
from crm_enrich.sandbox.control import SandboxControl
from crm_enrich.sandbox.dataset import VERDICT_DELIVERABLE, build_dataset, demo_contacts

SHOWN_FIELDS = ("Email", "Title", "Email_Verification_Status__c")
# Leads with a Company spelt their own way and no Website: Clearout's
# autocomplete finds the domain, which finds the company and the email.
DEMO_LEADS = 3
LEAD_FIELDS = ("Website", "Email", "NumberOfEmployees")
_LEGAL_FORMS = ("Inc", "Group", "Co", "LLC", "Corp")
LABELS = {"Email_Verification_Status__c": "Verification"}


def _short(value, width: int = 32) -> str:
    text = "-" if value in (None, "") else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _job(store: JobStore, job_id: str) -> Job:
    """A job the demo made (its record lives a week, far longer than the demo)."""
    job = store.get(job_id)
    if job is None:
        raise LookupError(f"job {job_id} is gone")
    return job


def _change(before, after) -> str:
    """A field's value before → after, or the one value if it did not change."""
    if before == after:
        return _short(after)
    return f"{_short(before)} → {_short(after)}"


def interesting_records(ids: list[str], jobs: dict[str, Job], provider: dict[str, dict]) -> list[tuple[str, str]]:
    """(record id, why it is shown): the first record of each kind the demo
    is about, in this order; a kind no record had is left out."""
    def outcome(rid: str) -> dict:
        return provider.get(rid, {}).get("outcome") or {}

    def settled_later(rid: str) -> bool:
        return any(step["state"] == State.AWAITING_VERIFICATION for step in jobs[rid].steps)

    kinds = [
        ("email revealed", lambda rid: bool(outcome(rid).get("email_revealed"))),
        ("invalid address", lambda rid: outcome(rid).get("verdict") == "invalid"),
        ("catch-all, settled by callback",
         lambda rid: outcome(rid).get("verdict") == "catch_all" and settled_later(rid)),
        # Nobody at Clodura, but the waterfall found them (title and LinkedIn written).
        ("found by the waterfall",
         lambda rid: str(outcome(rid).get("person_found_by") or "").startswith("clearout_")),
        ("unknown person", lambda rid: jobs[rid].skip_reason == SkipReason.NO_MATCH
         or (jobs[rid].state == State.DONE and not outcome(rid).get("matched")
             and not outcome(rid).get("person_found_by"))),
    ]
    shown: list[tuple[str, str]] = []
    for why, test in kinds:
        rid = next((r for r in ids if r in jobs and r not in dict(shown) and test(r)), None)
        if rid:
            shown.append((rid, why))
    return shown


def run_demo(records: int = 50, workers: int = 4, timeout_s: float = 600, ingest: str = "outbound_message") -> int:
    state_dir = Path(tempfile.mkdtemp(prefix="crm-enrich-demo-"))
    console = make_console()
    console.print(f"crm-enrich demo: {records} Contacts through the sandbox, in by {WAYS_IN[ingest]} "
                  f"(logs in {state_dir / 'logs'})", markup=False)
    # Clearout as the second opinion on risky and catch-all addresses, its
    # finder for people Clodura cannot reveal, and the waterfall for people
    # Clodura does not match at all (its Clearout steps: Clodura's people
    # search would place the demo's Leads by name, and the demo shows a
    # Lead's domain found by the autocomplete). The org's Outbound Messages
    # are declared, so a record they describe fully is not read.
    stack = Stack(state_dir, worker_concurrency=workers,
                  extra_env={"VERIFY_PROVIDER": "clodura_then_clearout", "CLEAROUT_FINDER": "true",
                             "WATERFALL_STEPS": "clearout_email,clearout_linkedin", **declared_outbound_fields(),
                             # cdc: the org sends no Outbound Message; the events: process subscribes.
                             "SALESFORCE_INGEST": ingest})
    try:
        print("  starting Redis, the sandbox, the web app (gunicorn), a Celery worker"
              + (" and the CDC subscriber …" if ingest == "cdc" else " …"))
        stack.start()
        control = SandboxControl(stack.sandbox.info)
        store = JobStore(stack.redis_client())
        return _run(console, stack, control, store, records, timeout_s)
    finally:
        stack.stop()
        shutil.rmtree(state_dir, ignore_errors=True)


def _run(console: Console, stack: Stack, control: SandboxControl, store: JobStore, records: int,
         timeout_s: float) -> int:
    contacts = demo_contacts(records)
    companies = sorted({c["_company"] for c in contacts})
    account_ids = control.create_accounts(companies)
    fields = [{k: v for k, v in c.items() if not k.startswith("_")} | {"AccountId": account_ids[c["_company"]]}
              for c in contacts]
    ids = control.create_records("Contact", fields)
    before = {rid: control.record("Contact", rid)["record"] for rid in ids}
    lead_ids = control.create_records("Lead", domain_leads(DEMO_LEADS, set(companies)))
    leads_before = {rid: control.record("Lead", rid)["record"] for rid in lead_ids}
    print(f"  created {len(companies)} Accounts, {len(ids)} Contacts and {len(lead_ids)} Leads; "
          f"the org sends {WAYS_IN[stack.env.get('SALESFORCE_INGEST', 'outbound_message')]} …")

    started = time.monotonic()
    # The Contacts, then the Accounts their jobs enrich (one job per company), and the Leads.
    watched = [("Contact", rid) for rid in ids] + [("Account", aid) for aid in account_ids.values()] \
        + [("Lead", rid) for rid in lead_ids]
    all_jobs: dict[tuple[str, str], str] = {}
    with JobProgress(console, len(watched)) as progress:
        while True:
            for key in watched:
                if key not in all_jobs:
                    job_id = redis_typing.text(store.r.get(keys.record_last_job(*key)))
                    if job_id:
                        all_jobs[key] = job_id
            final = sum(1 for job_id in all_jobs.values()
                        if (job := store.get(job_id)) is not None and job.state in FINAL_STATES)
            progress.update(final)
            if final == len(watched) or time.monotonic() - started > timeout_s:
                break
            time.sleep(0.25)
    elapsed = time.monotonic() - started
    jobs = {rid: job_id for (obj, rid), job_id in all_jobs.items() if obj == "Contact"}
    account_jobs = [job for (obj, _), job_id in all_jobs.items()
                    if obj == "Account" and (job := store.get(job_id)) is not None]

    after = {rid: control.record("Contact", rid) for rid in ids}
    contact_jobs = {rid: job for rid in ids if rid in jobs and (job := store.get(jobs[rid])) is not None}
    provider = {rid: store.provider_data(job.id) for rid, job in contact_jobs.items()}
    shown = interesting_records(ids, contact_jobs, provider)
    print()
    print_table(console, "Before → after (one record of each kind)",
                ("Contact", "shown for", *(LABELS.get(f, f) for f in SHOWN_FIELDS), "job"),
                [(_short(f"{before[rid].get('FirstName') or ''} {before[rid].get('LastName') or ''}".strip(), 24),
                  why, *(_change(before[rid].get(f), after[rid]["record"].get(f)) for f in SHOWN_FIELDS),
                  contact_jobs[rid].state)
                 for rid, why in shown])

    leads_ok = _show_domain_leads(console, control, store, all_jobs, leads_before)
    _show_change_log(stack, ids[0])

    counts = {state: 0 for state in ("done", "skipped", "failed")}
    enriched = verified = written = revealed = verified_later = found_by_clearout = 0
    found_by_waterfall: dict[str, int] = {}
    verdicts: dict[str, int] = {}
    skip_reasons: dict[str, int] = {}
    unfinished = []
    for rid in ids:
        job = store.get(jobs[rid]) if rid in jobs else None
        if job is None or not job.final:
            unfinished.append(rid)
            continue
        counts[job.state] += 1
        if job.skip_reason:
            skip_reasons[job.skip_reason] = skip_reasons.get(job.skip_reason, 0) + 1
        outcome = store.provider_data(job.id).get("outcome") or {}
        enriched += bool(outcome.get("matched")) and not outcome.get("person_found_by")
        if outcome.get("person_found_by"):
            step = outcome["person_found_by"]
            found_by_waterfall[step] = found_by_waterfall.get(step, 0) + 1
        verified += bool(outcome.get("verdict"))
        revealed += bool(outcome.get("email_revealed"))
        found_by_clearout += outcome.get("email_found_by") == "clearout"
        if outcome.get("verdict"):
            verdicts[outcome["verdict"]] = verdicts.get(outcome["verdict"], 0) + 1
            verified_later += any(step["state"] == "awaiting_verification" for step in job.steps)
        if job.state == State.DONE and after[rid]["writes"] and after[rid]["record"].get("Enriched_At__c"):
            written += 1
    clodura = control.clodura_usage()
    salesforce = control.salesforce_usage()
    outbound = control.outbound_log()
    failed_jobs = [_job(store, jobs[rid]) for rid in ids
                   if rid in jobs and _job(store, jobs[rid]).state == State.FAILED]

    print("\n  Summary")
    print(f"    records            {len(ids)} in {elapsed:.1f}s")
    print(f"    enriched           {enriched} (matched by Clodura); {sum(found_by_waterfall.values())} more "
          "found by the waterfall" + (" (" + ", ".join(f"{n} by {step}" for step, n in
                                                      sorted(found_by_waterfall.items())) + ")"
                                      if found_by_waterfall else ""))
    print(f"    verified           {verified} (email verdict written: "
          + ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items())) + ")")
    print(f"    emails revealed    {revealed} ({revealed - found_by_clearout} by Clodura's reveal, result by "
          f"callback; {found_by_clearout} by Clearout's finder)")
    print(f"    202 verifications  {verified_later} completed later (catch-all domains, deep check)")
    print(f"    callbacks          {_callbacks_summary(store)}")
    print(f"    written back       {written}")
    print(f"    skipped            {counts['skipped']}" + (" (" + ", ".join(
        f"{n} {reason}" for reason, n in sorted(skip_reasons.items())) + ")" if skip_reasons else ""))
    print(f"    failed             {counts['failed']}")
    print(f"    not final          {len(unfinished)}")
    print(f"    Clodura credits    {clodura['creditsSpent']:.2f} spent ({clodura['accepted']} requests, "
          f"{clodura['rejected_429']} answered 429)")
    org_calls = sum(1 for e in control.log("clodura") if e["path"] == "/api/v1/organisation/enrich")
    accounts_written = sum(1 for j in account_jobs if j.state == State.DONE and j.fields_written)
    print(f"    Accounts           {accounts_written} of {len(account_ids)} enriched with firmographics "
          f"({org_calls} organisation enrich calls for {len(ids)} Contacts and {len(lead_ids)} Leads)")
    clearout = control.clearout_usage()["calls"]
    print(f"    Clearout           {clearout.get('email_verify/instant', 0)} verifications (second opinion), "
          f"{clearout.get('email_finder/instant', 0)} finder searches, "
          f"{clearout.get('reverse_lookup/email', 0) + clearout.get('reverse_lookup/linkedin', 0)} reverse lookups")
    lookups = control.clearout_usage()["calls"].get("public/companies/autocomplete", 0)
    print(f"    Leads              {leads_ok} of {len(lead_ids)} got their domain from Clearout's autocomplete "
          f"({lookups} lookups in all, free: Accounts without a Website ask too), then company and email")
    print(f"    Salesforce API     {salesforce['api_used']} calls "
          f"({salesforce['api_used'] / max(1, len(ids)):.2f} per record)")
    if stack.cdc:
        print(f"    change events      {control.pubsub_events()['delivered']} delivered (counted against the "
              "org's daily event delivery allocation)")
    else:
        print(f"    Outbound Messages  {_outbound_summary(outbound)}")
    for job in failed_jobs[:5]:
        print(f"    failed {job.record_id}: {job.last_error}")

    ok = not unfinished and written == len(ids) and len(account_jobs) == len(account_ids) \
        and all(j.final for j in account_jobs) and leads_ok == len(lead_ids)
    print(f"\n  {'OK' if ok else 'NOT OK'}: every record reached a final state and was written back"
          if ok else "\n  NOT OK: some records were not final or not written back")
    return 0 if ok else 1


def domain_leads(count: int, avoid: set[str]) -> list[dict]:
    """Leads as a person types them: a known person, no Email, no Website,
    and a Company spelt "Northwind Analytics, Inc." where Clodura knows
    "Northwind Analytics", so Clodura's name match misses the company and
    Clearout's autocomplete (which ignores the legal form) does not."""
    ds = build_dataset()
    leads = []
    for company in ds.companies:
        if company.catch_all or company.name in avoid or company.name.split()[-1] in _LEGAL_FORMS:
            continue
        person = next((p for p in ds.people_at(company.organisation_id)
                       if p.known and p.email_verdict == VERDICT_DELIVERABLE), None)
        if person:
            leads.append({"FirstName": person.first_name, "LastName": person.last_name,
                          "Company": f"{company.name}, Inc."})
        if len(leads) == count:
            break
    return leads


def _show_domain_leads(console: Console, control: SandboxControl, store: JobStore,
                       all_jobs: dict[tuple[str, str], str], before: dict[str, dict]) -> int:
    """The Leads' Website (and what it brought) before → after; answers how
    many got their domain and had it written."""
    rows, found = [], 0
    for rid, was in before.items():
        now = control.record("Lead", rid)["record"]
        job = store.get(all_jobs.get(("Lead", rid), ""))
        got = bool(job and job.state == State.DONE and now.get("Website") and not was.get("Website")
                   and (store.provider_data(job.id).get("outcome") or {}).get("company_domain_found"))
        found += got
        rows.append((_short(f"{was.get('FirstName')} {was.get('LastName')}", 20), _short(was.get("Company"), 30),
                     *(_change(was.get(f), now.get(f)) for f in LEAD_FIELDS), job.state if job else "-"))
    print()
    print_table(console, "A domain found for a Lead (a Company, no Website)",
                ("Lead", "Company", "Website", "Email", "Employees", "job"), rows)
    return found


def _show_change_log(stack: Stack, record_id: str) -> None:
    """What crm-enrich changed on one record, as GET /admin/records shows it."""
    import requests

    view = requests.get(f"{stack.web_url}/admin/records/Contact/{record_id}", timeout=10,
                        headers={"Authorization": f"Bearer {stack.admin_token}"}).json()
    print(f"\n  Change log of Contact {record_id} (what, why, from whom; never the value):")
    for change in view.get("changes", []):
        at = time.strftime("%H:%M:%S", time.localtime(change["at"]))
        print(f"    {at}  {change['field']:<30} {change['rule']:<10} {change['source']:<26} "
              f"{change['provider']:<10} was {change['was']}")


WAYS_IN = {"outbound_message": "Outbound Messages", "cdc": "change events (CDC over the Pub/Sub API)"}


def _outbound_summary(outbound) -> str:
    deliveries = outbound.get("deliveries", outbound) if isinstance(outbound, dict) else outbound
    if not isinstance(deliveries, list):
        return "n/a"
    acked = sum(1 for d in deliveries if d.get("acked"))
    return f"{len(deliveries)} POSTs, {acked} acknowledged"


def _callbacks_summary(store: JobStore) -> str:
    applied: dict[str, int] = {}
    other: dict[str, int] = {}
    for name, labels, value in counters.read(store.r):
        if name == "callbacks_applied":
            applied[labels["step"]] = int(value)
        elif name == "async_results":
            other[labels["outcome"]] = other.get(labels["outcome"], 0) + int(value)
    text = f"{sum(applied.values())} received and applied (" + \
        ", ".join(f"{n} {step}" for step, n in sorted(applied.items())) + ")"
    if other:
        text += "; " + ", ".join(f"{n} by {how}" for how, n in sorted(other.items()))
    return text
