"""Two worker hosts sharing one Redis, one Clodura plan and one Salesforce
org, each in a network namespace of its own (Redis and the web app with
beat on two more; see crm_enrich/dev/netns.py): the shared limiter holds
across hosts, a host cut off from the network for a while loses nothing
and pays nothing twice, and a dead host's unfinished tasks are run by the
other within the visibility timeout.

Needs root (network namespaces): where they cannot be made, every test
here is skipped and says why.

The figures (calls against the plan, records done, repeats, recovery
times) are printed: run with -s to see them."""
from __future__ import annotations

import json
import os
import time
from collections import Counter

import pytest
from celery import Celery

from crm_enrich import keys
from crm_enrich.dev.devstack import wait_for
from crm_enrich.dev.hosts import HostsStack
from crm_enrich.dev.netns import Network, why_no_namespaces
from crm_enrich.jobs.store import JobStore
from crm_enrich.queues import ENRICH_RECORD
from crm_enrich.sandbox.control import SandboxControl
from crm_enrich.sandbox.dataset import build_dataset
from tests.integration.conftest import final_job
from tests.integration.helpers import contacts_for, log_mark

# The plan both hosts share, on our side and the sandbox's: tight enough
# that the two hosts together ask for more than it allows.
PLAN = [(5, 1), (30, 10)]
CONCURRENCY = 2   # per worker host
VISIBILITY_TIMEOUT_S = 12
MAX_COUNTDOWN_S = VISIBILITY_TIMEOUT_S / 2  # what a task may wait for a slot (settings.max_countdown_s)
BATCH_BURST_MAX_S = 60  # the default: how long a message's batch waits for its last record
# How long a host stays cut off. The 60 s is the default; CI may
# shorten it (it must stay longer than the visibility timeout, so that the
# other host takes over the cut-off host's tasks meanwhile).
CUT_S = float(os.environ.get("WORKER_HOST_CUT_S", "60"))
# A repeat call is excused only if its first answer was on its way to the
# faulted host when the fault struck (the answer never reached us, or
# reached a process that could no longer record it in Redis).
IN_FLIGHT_SLACK_S = 2.0

HOST_A, HOST_B = "host-a", "host-b"


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    reason = why_no_namespaces()
    if reason:
        pytest.skip(f"the worker-host tests need network namespaces: {reason}")
    with Network() as network, HostsStack(
            tmp_path_factory.mktemp("hosts"), network, worker_hosts=(HOST_A, HOST_B),
            worker_concurrency=CONCURRENCY, extra_env={
                "CLODURA_RATE_LIMITS": ";".join(f"{n}/{s}s" for n, s in PLAN),
                "VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S), "SWEEP_INTERVAL_S": "1",
                # A flusher cut off or killed mid-batch gives its batch back this soon,
                # and a verification whose answer died with its host is asked again
                # this soon (production: 300 s).
                "BATCH_LEASE_S": "8", "VERIFY_POLL_AFTER_S": "5"}) as stack:
        control = SandboxControl(stack.sandbox.info)
        key = stack.sandbox.info["clodura_api_key"]
        control.http.post(f"{control.clodura}/_sandbox/clodura/config",
                          json={"rate_limits": {key: [list(w) for w in PLAN]}}).raise_for_status()
        yield stack


@pytest.fixture
def control(hosts):
    return SandboxControl(hosts.sandbox.info)


@pytest.fixture
def slow_enrich(control):
    """Clodura's enrich answers after a second, so a host has calls in
    flight when the fault strikes: tasks are otherwise over in milliseconds,
    and the jobs then wait in the Salesforce batches, held by no task."""
    control.add_fault("clodura", path="/api/v1/cleanup/enrich", delay=1.0, times=-1)
    yield
    control.clear_faults("clodura")


@pytest.fixture
def store(hosts):
    return JobStore(hosts.redis_client())


_people = iter([p for p in build_dataset().people if p.known and p.email_verdict == "Deliverable"][1200:])


def create_contacts(control, n: int) -> list[str]:
    return contacts_for(control, [next(_people) for _ in range(n)])


def seq(control) -> int:
    return log_mark(control, "clodura")


def charged_calls(control, since: int) -> list[dict]:
    return [e for e in control.log("clodura", since=since) if e.get("credits", 0) > 0]


def repeats(calls: list[dict]) -> list[list[dict]]:
    """The charged calls about one subject, for every subject asked more than once."""
    by_subject: dict[tuple, list[dict]] = {}
    for e in calls:
        by_subject.setdefault((e["path"], e["subject"]), []).append(e)
    return [same for same in by_subject.values() if len(same) > 1]


def enrich_calls(control, since: int) -> int:
    return sum(1 for e in control.log("clodura", since=since) if e["path"] == "/api/v1/cleanup/enrich")


def done_count(store: JobStore, ids: list[str]) -> int:
    return sum(1 for rid in ids if (j := store.r.get(f"record:Contact:{rid}:last_job"))
               and (job := store.get(j)) and job.final)


def assert_all_done_and_written_once(control, store, ids: list[str], timeout: float) -> None:
    jobs = [final_job(store, "Contact", rid, timeout=timeout) for rid in ids]
    assert {j.state for j in jobs} == {"done"}, [j.last_error for j in jobs if j.state != "done"]
    for rid in ids:
        # A write batch whose answer was lost may be sent again: the same values.
        writes = control.record("Contact", rid)["writes"]
        assert writes and all(w["fields"] == writes[0]["fields"] for w in writes), rid


def assert_repeats_only_for_answers_in_flight(calls, host_address: str, fault_at: float, fault_end: float) -> int:
    """Every subject paid for twice had its first answer sent to the faulted
    host as the fault struck; answers how many there were."""
    repeated = repeats(calls)
    for same in repeated:
        first = same[0]
        assert first["client"] == host_address and fault_at - IN_FLIGHT_SLACK_S <= first["t"] <= fault_end, [
            f"{e['endpoint']} from {e['client']} at {e['t'] - fault_at:+.1f} s from the fault" for e in same]
    assert len(repeated) <= CONCURRENCY  # at most one call in flight per process of that host
    return len(repeated)


def held_tasks(hosts: HostsStack, worker: str) -> dict[str, str]:
    """The record tasks a worker holds now ({task id: job id}): running,
    prefetched, or due later (rate-limit waits)."""
    inspect = Celery("hosts-test", broker=hosts.redis.url).control.inspect(
        destination=[hosts.worker_nodes[worker]], timeout=2)
    requests = [task.get("request", task)  # scheduled tasks come wrapped
                for answer in (inspect.active(), inspect.reserved(), inspect.scheduled())
                for tasks in (answer or {}).values() for task in tasks]
    return {request["id"]: request["args"][0] for request in requests if request["name"] == ENRICH_RECORD}


def unfinished_jobs(store: JobStore, job_ids) -> list[str]:
    return [job_id for job_id in job_ids if not (job := store.get(job_id)) or not job.final]


def orphans_to_be(hosts: HostsStack, store: JobStore) -> dict[str, str]:
    """Host A's held tasks that are of jobs not done yet and that it has not
    acked: what the broker gives back if host A dies now."""
    held = held_tasks(hosts, HOST_A)
    unfinished, unacked = set(unfinished_jobs(store, set(held.values()))), unacked_task_ids(store)
    return {task_id: job_id for task_id, job_id in held.items() if job_id in unfinished and task_id in unacked}


def unacked_task_ids(store: JobStore) -> set[str]:
    """The tasks the broker will give back if their worker never acks them
    (kombu's `unacked` hash: delivery tag -> [message, exchange, routing key])."""
    return {json.loads(raw)[0]["headers"]["id"] for raw in store.r.hvals("unacked")}


def deliveries(store: JobStore, task_id: str) -> int:
    """How often a task was delivered to a worker that started running it
    (the count every record task keeps for its poison-message cap)."""
    return sum(int(store.r.get(key) or 0) for key in store.r.scan_iter(match=keys.deliveries(task_id, "*")))


def usage(control) -> Counter:
    return Counter({k: v for k, v in control.clodura_usage().items() if isinstance(v, int | float)})


def test_the_shared_limiter_holds_across_hosts(hosts, control, store):
    before, mark = usage(control), seq(control)
    ids = create_contacts(control, 24)
    started = time.time()
    assert_all_done_and_written_once(control, store, ids, timeout=120)
    took = time.time() - started
    calls = control.log("clodura", since=mark)
    spent = usage(control) - before
    assert spent["rejected_429"] == 0
    assert spent["accepted"] == len(calls) >= 2 * len(ids) - 2
    clients = Counter(e["client"] for e in calls)
    assert set(clients) == {hosts.worker_hosts[HOST_A].address, hosts.worker_hosts[HOST_B].address}
    times = sorted(e["t"] for e in calls)
    busiest = {window: max(sum(1 for t in times if start <= t < start + window) for start in times)
               for _, window in PLAN}
    # The plan, not the workers, set the pace: the hosts together used all of it.
    assert busiest[10] >= PLAN[1][0] - 5
    print(f"\nworker hosts, shared limiter: {len(ids)} records done in {took:.1f} s; {len(calls)} Clodura calls "
          f"({', '.join(f'{n} from {c}' for c, n in clients.items())}), 429s: {spent['rejected_429']}; "
          f"busiest 1 s: {busiest[1]} (plan {PLAN[0][0]}), busiest 10 s: {busiest[10]} (plan {PLAN[1][0]})")


def test_a_host_cut_off_for_a_while_loses_nothing_and_pays_nothing_twice(hosts, control, store):
    network, host_a = hosts.network, hosts.worker_hosts[HOST_A]
    before, mark = usage(control), seq(control)
    ids = create_contacts(control, 30)

    # Cut it off while the run is under way: both hosts are working, and
    # its jobs wait in tasks and batches (a look at what host A's worker
    # holds finds little: the jobs spend their waits in Redis).
    # (Records end together: a message's writes go out as one batch.)
    wait_for(lambda: enrich_calls(control, mark) >= 8, 90, "a quarter of the records to be enriched", interval=0.2)
    held = set(ids) - {rid for rid in ids if done_count(store, [rid])}
    network.cut(host_a)
    cut_at = time.time()
    try:
        assert held, "every record was done before the cut: nothing was tested"
        # Host B carries on alone, with host A's tasks once their visibility timeout is over.
        done_at_cut = done_count(store, ids)
        wait_for(lambda: done_count(store, ids) > done_at_cut, CUT_S, "host B to carry on alone", interval=0.5)
        time.sleep(max(0.0, cut_at + CUT_S - time.time()))  # the outage's length, not a wait for anything
    finally:
        network.restore(host_a)
    relinked_at = time.time()

    # New work after the relink: host A must take its share again.
    later = create_contacts(control, 10)
    assert_all_done_and_written_once(control, store, ids + later, timeout=150)
    all_done_at = time.time()
    first_a_call = wait_for(lambda: next((e["t"] for e in control.log("clodura", since=mark)
                                          if e["client"] == host_a.address and e["t"] > relinked_at), None),
                            90, "host A to call Clodura again after the relink")
    calls = charged_calls(control, mark)
    twice = assert_repeats_only_for_answers_in_flight(calls, host_a.address, cut_at, relinked_at)
    spent = usage(control) - before
    assert spent["rejected_429"] == 0
    print(f"\nworker hosts, host A cut off for {CUT_S:.0f} s with {len(held)} records not done: "
          f"{len(ids) + len(later)} records done, "
          f"{len(calls)} charged Clodura calls, subjects paid twice: {twice}, 429s: {spent['rejected_429']}; "
          f"host A called Clodura again {first_a_call - relinked_at:.1f} s after the relink; "
          f"all records done {all_done_at - relinked_at:.1f} s after the relink")


def test_a_dead_hosts_unfinished_tasks_are_run_by_the_other_within_the_visibility_timeout(hosts, control, store,
                                                                                       slow_enrich):
    """Runs last: host A stays dead."""
    network, host_a = hosts.network, hosts.worker_hosts[HOST_A]
    mark = seq(control)
    ids = create_contacts(control, 24)

    # Kill it while it holds tasks of jobs that are not done.
    held = wait_for(lambda: orphans_to_be(hosts, store), 60, "host A to hold tasks of unfinished jobs",
                    interval=0.2)
    killed = network.kill(host_a)
    killed_at = time.time()
    assert killed
    wait_for(lambda: not host_a.pids(), 10, "every process of host A to be gone")
    # Looked at again now that host A can ack nothing more: a task that
    # ended just before the kill was acked, and is not given back.
    unacked, unfinished = unacked_task_ids(store), set(unfinished_jobs(store, set(held.values())))
    orphans = {task_id: deliveries(store, task_id) for task_id, job_id in held.items()
               if task_id in unacked and job_id in unfinished}
    assert orphans, "host A held no task of an unfinished job when it died: nothing was tested"
    orphaned_jobs = {held[task_id] for task_id in orphans}

    # Each of them is delivered to host B once the visibility timeout is
    # over (a task that was due later runs when it is due: no later than
    # the longest countdown after that).
    picked_up: dict[str, float] = {}

    def all_picked_up() -> bool:
        for task_id, before in orphans.items():
            if task_id not in picked_up and deliveries(store, task_id) > before:
                picked_up[task_id] = time.time()
        return len(picked_up) == len(orphans)

    bound_s = VISIBILITY_TIMEOUT_S + MAX_COUNTDOWN_S + 5
    wait_for(all_picked_up, bound_s + 10, "host B to run every task host A held", interval=0.2)
    pickup_s = max(picked_up.values()) - killed_at
    assert pickup_s <= bound_s, pickup_s

    # Then everything is done, once (how soon depends on the plan: the
    # record's batch waits for all 24, BATCH_BURST_MAX_S at most).
    assert_all_done_and_written_once(control, store, ids, timeout=BATCH_BURST_MAX_S + 60)
    done_s = max(store.get(job_id).updated_at for job_id in orphaned_jobs) - killed_at
    calls = charged_calls(control, mark)
    # The sandbox may answer a call of host A's a moment after its death.
    twice = assert_repeats_only_for_answers_in_flight(calls, host_a.address, killed_at,
                                                      killed_at + IN_FLIGHT_SLACK_S)
    after_kill = Counter(e["client"] for e in control.log("clodura", since=mark) if e["t"] > killed_at + 1)
    assert host_a.address not in after_kill
    print(f"\nworker hosts, host A killed ({len(killed)} processes) holding {len(orphans)} tasks of "
          f"{len(orphaned_jobs)} unfinished jobs: host B ran them all {pickup_s:.1f} s after the kill "
          f"(visibility timeout {VISIBILITY_TIMEOUT_S} s), and they were done {done_s:.1f} s after it; "
          f"{len(ids)} records done, subjects paid twice: {twice}")
