"""A wait longer than the broker's redelivery timeout is parked in Redis,
never held as a delayed message: the limiter's long window used up by a
backfill leaves no copies of waiting tasks behind, nobody is paid for
twice, and every job ends done once the window frees up.

A stack of its own with a visibility timeout of a few seconds and a
"day" of 40 s (30 Clodura requests) against 40 records."""
from __future__ import annotations

import base64
import json
import time
from collections import Counter

import pytest

from crm_enrich.dev.devstack import Stack, wait_for
from crm_enrich.jobs.state import State
from crm_enrich.jobs.store import JobStore
from crm_enrich.queues import BULK_QUEUE, URGENT_QUEUE
from crm_enrich.sandbox.control import SandboxControl
from crm_enrich.sandbox.dataset import build_dataset
from tests.integration.conftest import final_job

VISIBILITY_TIMEOUT_S = 6
WINDOW, WINDOW_S, RECORDS = 30, 40, 40


@pytest.fixture(scope="module")
def wstack(tmp_path_factory):
    with Stack(tmp_path_factory.mktemp("longwaits"), worker_concurrency=2, extra_env={
            "VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S), "SWEEP_INTERVAL_S": "1",
            "CLODURA_RATE_LIMITS": f"10/second;100/minute;{WINDOW}/{WINDOW_S}s",
            # Clearout verifies, so each record costs one Clodura call (enrich).
            "VERIFY_PROVIDER": "clearout"}) as stack:
        yield stack


def broker_messages_per_job(r) -> Counter:
    """Every copy of an enrich task the broker holds: waiting in a queue or
    delivered and not yet acknowledged (kombu's `unacked` hash)."""
    payloads = [raw for queue in (URGENT_QUEUE, BULK_QUEUE) for raw in r.lrange(queue, 0, -1)]
    payloads += [json.dumps(json.loads(raw)[0]) for raw in r.hvals("unacked")]
    per_job: Counter = Counter()
    for raw in payloads:
        message = json.loads(raw)
        if message["headers"].get("task") != "crm_enrich.enrich_record":
            continue
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        per_job[args[0]] += 1
    return per_job


def test_a_used_up_window_parks_jobs_instead_of_piling_up_delayed_copies(wstack):
    control = SandboxControl(wstack.sandbox.info)
    store = JobStore(wstack.redis_client())
    people = [p for p in build_dataset().people if p.known and p.email_verdict == "Deliverable"][400:400 + RECORDS]
    ids = control.create_records("Contact", [{"FirstName": p.first_name, "LastName": p.last_name,
                                              "Email": p.email} for p in people])

    def job_ids() -> list[str]:
        found = [store.r.get(f"record:Contact:{rid}:last_job") for rid in ids]
        return found if all(found) else []

    jobs = wait_for(job_ids, 30, "a job per record")
    wait_for(lambda: len(store.ids_in_state(State.DEFERRED)) >= RECORDS - WINDOW, 60,
             "the jobs beyond the window to be parked")
    parked_at = time.time()
    # Two redelivery timeouts pass while the window is used up.
    wait_for(lambda: time.time() > parked_at + 2 * VISIBILITY_TIMEOUT_S + 2, 30, "two visibility timeouts",
             interval=0.5)
    assert store.ids_in_state(State.FAILED) == []
    waiting = [j for j in jobs if not store.get(j).final]
    assert waiting, "the window should still hold some jobs back"
    copies = broker_messages_per_job(store.r)
    assert max((copies[j] for j in waiting), default=0) <= 1, copies

    finished = [final_job(store, "Contact", rid, timeout=120) for rid in ids]
    assert {j.state for j in finished} == {"done"}, [j.last_error for j in finished if j.state != "done"]
    enrich_calls = [e for e in control.log("clodura") if e["path"] == "/api/v1/cleanup/enrich"]
    assert len(enrich_calls) == RECORDS  # one per person: nobody paid for twice
    assert max(broker_messages_per_job(store.r).values(), default=0) == 0
