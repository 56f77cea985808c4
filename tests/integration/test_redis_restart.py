"""Redis SIGKILLed mid-run and started again (AOF on, same port and data
directory): the web app, the workers and beat carry on by themselves, every
record is done, written once, and no job is left stuck."""
from __future__ import annotations

import pytest

from crm_enrich.dev.devstack import Stack, wait_for
from crm_enrich.jobs.state import FINAL
from crm_enrich.jobs.store import JobStore
from crm_enrich.sandbox.control import SandboxControl
from crm_enrich.sandbox.dataset import build_dataset
from tests.integration.conftest import final_job

RECORDS, CONCURRENCY = 40, 3


@pytest.fixture(scope="module")
def rstack(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("redisrestart"), worker_concurrency=CONCURRENCY, redis_url="",
               extra_env={"VISIBILITY_TIMEOUT_S": "10", "SWEEP_INTERVAL_S": "1", "STUCK_AFTER_S": "15",
                          # A flusher killed with Redis gives its batch back when its lease
                          # ends; a verification whose request Redis could not record is
                          # asked again after VERIFY_POLL_AFTER_S.
                          "BATCH_LEASE_S": "8", "VERIFY_POLL_AFTER_S": "10"}) as stack:
        yield stack


def test_redis_killed_and_restarted_mid_run_loses_nothing_and_pays_nothing_twice(rstack):
    control = SandboxControl(rstack.sandbox.info)
    people = [p for p in build_dataset().people if p.known and p.email_verdict == "Deliverable"][800:800 + RECORDS]
    ids = control.create_records("Contact", [{"FirstName": p.first_name, "LastName": p.last_name,
                                              "Email": p.email} for p in people])

    def done_count() -> int:
        store = JobStore(rstack.redis_client())
        return sum(1 for rid in ids if (j := store.r.get(f"record:Contact:{rid}:last_job"))
                   and (job := store.get(j)) and job.final)

    wait_for(lambda: done_count() >= RECORDS // 3, 90, "a third of the records to be done")
    rstack.redis.kill_and_restart()

    store = JobStore(rstack.redis_client())
    jobs = [final_job(store, "Contact", rid, timeout=180) for rid in ids]
    assert {j.state for j in jobs} == {"done"}, [j.last_error for j in jobs if j.state != "done"]
    for rid in ids:
        # A write batch Salesforce took just as Redis died is sent again on
        # recovery (nothing could record that it went through): the same
        # values, never a second enrichment with other ones.
        writes = control.record("Contact", rid)["writes"]
        assert writes and all(w["fields"] == writes[0]["fields"] for w in writes), rid
    in_working_state = [s for s, n in store.counts_by_state().items() if n and s not in FINAL]
    assert in_working_state == []                                        # no job stuck
    enrich_calls = [e for e in control.log("clodura") if e["path"] == "/api/v1/cleanup/enrich"]
    # A call whose answer arrived while Redis was down had nowhere to be
    # kept: at most one per worker process may be asked again.
    assert RECORDS <= len(enrich_calls) <= RECORDS + CONCURRENCY, len(enrich_calls)
    for name in ("web", "worker", "beat"):
        assert rstack.processes[name].poll() is None, f"{name} died with Redis"
