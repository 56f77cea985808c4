"""The daily credit budget holds with charges that come later: a stack of
its own with a budget of 20 credits, two worker processes, and reveal
callbacks that arrive seconds after the request."""
from __future__ import annotations

import pytest

from crm_enrich.dev.devstack import Stack, wait_for
from crm_enrich.jobs.state import FINAL, HELD
from crm_enrich.jobs.store import JobStore
from crm_enrich.providers.quota import BUDGET_PAUSED_UNTIL, COSTS, Quota, today
from crm_enrich.sandbox.control import SandboxControl
from crm_enrich.sandbox.dataset import build_dataset

BUDGET = 20.0
RECORDS = 40


@pytest.fixture(scope="module")
def bstack(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("budget"), worker_concurrency=2, extra_env={
            "CLODURA_DAILY_CREDIT_BUDGET": str(BUDGET), "SWEEP_INTERVAL_S": "1"}) as stack:
        stack.start_worker("worker2", concurrency=2)
        yield stack


def people_without_email(count: int):
    ds = build_dataset()
    companies = {c.organisation_id: c for c in ds.companies}
    chosen = [p for p in ds.people if p.known and p.email_verdict == "Deliverable"
              and not companies[p.organisation_id].catch_all][:count]
    return [(p, companies[p.organisation_id]) for p in chosen]


def settled(store: JobStore, ids: list[str]) -> dict[str, str] | None:
    """Each record's job state, once every job (Accounts' too) is final or
    held: nothing still working or waiting for a callback."""
    if any(count for state, count in store.counts_by_state().items() if state not in FINAL | HELD):
        return None
    states = {}
    for rid in ids:
        job_id = store.r.get(f"record:Contact:{rid}:last_job")
        job = store.get(job_id) if job_id else None
        if job is None or job.state not in FINAL | HELD:  # a held job may resume between the two reads
            return None
        states[rid] = job.state
    return states


def test_spending_stays_within_the_budget_and_the_rest_waits_for_the_next_day(bstack):
    control = SandboxControl(bstack.sandbox.info)
    store = JobStore(bstack.redis_client())
    quota = Quota(store.r, BUDGET)
    # Callbacks come five seconds after each reveal: a budget that counted a
    # reveal only when its result came would let many more through.
    control.clodura_webhook_fault("late", times=RECORDS, late_s=5)
    chosen = people_without_email(RECORDS)
    accounts = control.create_accounts(sorted({company.name for _, company in chosen}))
    ids = control.create_records("Contact", [
        {"FirstName": p.first_name, "LastName": p.last_name, "AccountId": accounts[c.name]} for p, c in chosen])

    first_day = wait_for(lambda: settled(store, ids), 120, "every job to finish or be held")
    spent = control.clodura_usage()["creditsSpent"]
    assert spent <= BUDGET + COSTS["reveal_email"], spent
    assert abs(quota.spent_today() - spent) < 0.01      # our count is the provider's
    held = [rid for rid, state in first_day.items() if state in HELD]
    assert len(held) >= RECORDS // 2                     # most wait, none is lost
    assert not [state for state in first_day.values() if state in ("failed", "skipped")]
    for rid, state in first_day.items():
        if state == "done":
            assert control.record("Contact", rid)["record"]["Email"]
    steps_before = {rid: len(store.get(store.r.get(f"record:Contact:{rid}:last_job")).steps) for rid in held}

    # The next day: the budget is fresh, the held jobs resume and spend it.
    store.r.delete(f"credits:clodura:spent:{today()}", BUDGET_PAUSED_UNTIL)

    def next_day_settled():
        states = settled(store, ids)
        return states if states and control.clodura_usage()["creditsSpent"] > spent else None

    second_day = wait_for(next_day_settled, 120, "held jobs to resume and settle again")
    spent_again = control.clodura_usage()["creditsSpent"] - spent
    assert spent_again <= BUDGET + COSTS["reveal_email"], spent_again
    assert not [state for state in second_day.values() if state in ("failed", "skipped")]
    assert all(state == "done" or state in HELD for state in second_day.values())
    resumed = [rid for rid in held
               if len(store.get(store.r.get(f"record:Contact:{rid}:last_job")).steps) > steps_before[rid]]
    assert resumed, "no held job went on after the reset"
    print(f"day 1: {spent:g} credits, {len(held)} of {RECORDS} held; "
          f"day 2: {spent_again:g} credits, {sum(s == 'done' for s in second_day.values())} done in all")
