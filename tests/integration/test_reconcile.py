"""Reconciliation: records created while nothing told us (their Outbound
Messages never delivered) are found by the next scheduled reconciliation
and enriched, as a bulk run of kind `reconcile`; a record we already have a
job for is not queued again. A stack of its own with a reconciliation every
few seconds."""
from __future__ import annotations

import pytest

from crm_enrich.dev.devstack import Stack, wait_for
from crm_enrich.jobs.store import JobStore
from crm_enrich.sandbox.control import SandboxControl
from crm_enrich.sandbox.dataset import build_dataset
from tests.integration.conftest import final_job


@pytest.fixture(scope="module")
def cstack(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("reconcile"), worker_concurrency=2,
               extra_env={"RECONCILE_INTERVAL_S": "4"}) as stack:
        yield stack


def test_records_whose_messages_never_came_are_enriched_by_the_next_reconciliation(cstack):
    control = SandboxControl(cstack.sandbox.info)
    store = JobStore(cstack.redis_client())
    people = [p for p in build_dataset().people if p.known and p.email_verdict == "Deliverable"][1000:1004]
    fields = [{"FirstName": p.first_name, "LastName": p.last_name, "Email": p.email} for p in people]
    (announced,) = control.create_records("Contact", fields[:1])
    silent = control.create_records("Contact", fields[1:], fire_outbound=False)

    for rid in silent:
        job = final_job(store, "Contact", rid, timeout=60)
        assert job.state == "done", job.last_error
        assert job.source == "reconcile"
        record = control.record("Contact", rid)
        assert record["record"]["Enriched_At__c"] and len(record["writes"]) == 1
    job = final_job(store, "Contact", announced, timeout=60)
    assert job.source == "outbound_message"

    # Later reconciliations find nothing left to do: every record was
    # written once, and its one job is the last.
    runs_before = len(store.r.keys("run:*:jobs"))
    wait_for(lambda: len(store.r.keys("run:*")) > runs_before + 2, 30, "two more reconciliations")
    for rid in [announced, *silent]:
        assert len(control.record("Contact", rid)["writes"]) == 1
