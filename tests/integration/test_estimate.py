"""Estimates that match the bill: a dry run prices a selection from what
its records need, and the real run's charge at the (simulated) Clodura
lands inside the range. A stack of its own, so that no other test's
leftover work spends credits while the run is measured."""
from __future__ import annotations

import pytest
import requests

from crm_enrich import keys
from crm_enrich.dev.devstack import Stack, wait_for
from crm_enrich.jobs.store import JobStore
from crm_enrich.sandbox.control import SandboxControl
from crm_enrich.sandbox.dataset import demo_contacts

from .conftest import final_job


@pytest.fixture(scope="module")
def estack(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("estimate"), worker_concurrency=2,
               extra_env={"SWEEP_INTERVAL_S": "1",
                          "WATERFALL_STEPS": "clearout_email,clearout_linkedin,clodura_search"}) as stack:
        yield stack


def api(stack, method: str, path: str, **kw) -> requests.Response:
    return requests.request(method, stack.web_url + path, timeout=60,
                            headers={"Authorization": f"Bearer {stack.admin_token}"}, **kw)


def test_the_real_charge_lies_inside_the_estimate(estack):
    control, store = SandboxControl(estack.sandbox.info), JobStore(estack.redis_client())
    # Known people with and without an email, a mistyped address, people at
    # catch-all companies, people Clodura never heard of; each under their
    # company's Account (not enriched today).
    people = demo_contacts(24, seed=13)
    accounts = control.create_accounts(sorted({p["_company"] for p in people}))
    rows = [{k: v for k, v in p.items() if not k.startswith("_")} | {"AccountId": accounts[p["_company"]]}
            for p in people]
    ids = control.create_records("Contact", rows, fire_outbound=False)
    # One catch-all domain is known already (an earlier verification found it).
    catch_all = next(p["_domain"] for p in people if p["_case"] == "catch_all" and "Email" in p)
    store.r.set(keys.catch_all_domain(catch_all), 1, ex=3600)

    dry = api(estack, "POST", "/admin/rerun", json={"object": "Contact", "ids": ids, "dryRun": True})
    assert dry.status_code == 200, dry.text
    estimate = dry.json()
    needs = estimate["needs"]
    assert estimate["records"] == estimate["priced"] == 24
    assert needs["reveal_email"]["records"] == sum("Email" not in p for p in people)
    assert needs["verify"]["records"] == 24  # every address, known or revealed
    assert needs["org_enrich"]["records"] == len(accounts)
    low, high = estimate["credits"]["atLeast"], estimate["credits"]["atMost"]
    assert 0 < low < high
    # The waterfall may ask Clearout about every address (its credits are its own).
    assert needs["clearout_reverse_email"]["records"] == sum("Email" in p for p in people)
    clearout_low, clearout_high = estimate["clearoutCredits"]["atLeast"], estimate["clearoutCredits"]["atMost"]
    assert clearout_low == 0 < clearout_high

    spent_before = control.clodura_usage()["creditsSpent"]
    clearout_before = control.clearout_usage()["credits_spent"]
    run_id = api(estack, "POST", "/admin/rerun", json={"object": "Contact", "ids": ids}).json()["runId"]
    wait_for(lambda: api(estack, "GET", f"/admin/runs/{run_id}").json()["status"] == "finished", 180,
             "the run to finish", interval=0.5)
    for account_id in accounts.values():
        final_job(store, "Account", account_id, timeout=60)
    real = round(control.clodura_usage()["creditsSpent"] - spent_before, 2)
    clearout_real = control.clearout_usage()["credits_spent"] - clearout_before
    print(f"estimate {low}..{high} credits, real charge {real} credits; Clearout: estimate "
          f"{clearout_low}..{clearout_high}, real {clearout_real}; needs {needs}")
    assert low <= real <= high
    assert clearout_low <= clearout_real <= clearout_high
    assert clearout_real > 0   # the people Clodura does not know were looked up
