"""Redis Sentinel on real processes: a master, one replica and three
Sentinels; the web app, two workers and beat. 300 records are sent, and at
40 % done the master is SIGKILLed. The Sentinels promote the replica, every
process follows it, and every record ends done, with no more provider calls
than the README allows for a failover (the tasks running at the kill).

Celery's and kombu's known failover bugs are what this watches for: workers
that reconnect but never consume again (celery/celery#8030, #9054, #10096,
kombu#2007), a worker that keeps the dead master's address (#6348), a
worker killed by its own unacked-message restore on a closed connection
(worker/app.py). Both workers must take tasks after the kill, and beat must
write its heartbeat to the new master."""
from __future__ import annotations

import os
import time
from collections import Counter

import pytest

from crm_enrich import keys
from crm_enrich.dev.devstack import SentinelRedis, Stack, wait_for
from crm_enrich.jobs.store import JobStore
from crm_enrich.sandbox.control import SandboxControl
from crm_enrich.sandbox.dataset import build_dataset
from tests.integration.helpers import doctor

RECORDS, CONCURRENCY = 300, 2
KILL_AT = int(RECORDS * 0.4)
# How long the whole run may take after the kill (settable for slow machines).
TIMEOUT_S = float(os.environ.get("FAILOVER_TEST_TIMEOUT_S", "150"))
FAST_CLODURA = [[200, 1], [12000, 60], [1000000, 86400]]


@pytest.fixture(scope="module")
def hastack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("sentinel"), worker_concurrency=CONCURRENCY, sentinel=True, extra_env={
        "CLODURA_RATE_LIMITS": "200/second;12000/minute;1000000/day",
        # A task running on the dead master comes back within seconds; a
        # flush cut by the kill is sent again when its lease ends.
        "VISIBILITY_TIMEOUT_S": "10", "SWEEP_INTERVAL_S": "1", "STUCK_AFTER_S": "15",
        "BATCH_LEASE_S": "8", "VERIFY_POLL_AFTER_S": "10"})
    try:
        stack.start()
        stack.start_worker("worker2")
        yield stack
    finally:
        stack.stop()


def _done(store_r, record_ids: list[str]) -> int:
    job_ids = store_r.mget([f"record:Contact:{rid}:last_job" for rid in record_ids])
    pipe = store_r.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hget(keys.job(job_id or "none"), "state")
    return sum(1 for state in pipe.execute() if state == "done")


def _unfinished(store_r, record_ids: list[str]) -> str:
    """What the records not done are waiting for, for the failure message."""
    store = JobStore(store_r)
    jobs = [store.get(j) if j else None for j in store_r.mget([f"record:Contact:{rid}:last_job"
                                                                for rid in record_ids])]
    waiting = Counter((j.state, (j.last_error or "")[:80]) if j else ("no job", "") for j in jobs
                      if not j or j.state != "done")
    return (f"{dict(waiting)}; queues enrich={store_r.llen('enrich')} bulk={store_r.llen('bulk')} "
            f"unacked={store_r.hlen('unacked')} (restore mutex ttl {store_r.ttl('unacked_mutex')})")


def test_doctor_counts_the_replicas_that_acknowledgements_wait_for(hastack):
    code, checks, output = doctor(hastack.env)
    ok, detail, _ = checks["Redis replicas"]
    assert ok and detail.startswith("1 online, 1 needed"), output
    # Asked for more than there are: every ACK would be a 503, and doctor says so.
    code, checks, output = doctor({**hastack.env, "REDIS_ACK_REPLICAS": "2"})
    ok, detail, fix = checks["Redis replicas"]
    assert code != 0 and not ok and detail.startswith("1 online, 2 needed") and "503" in fix, output


def test_master_killed_at_40_percent_every_record_done_and_work_resumes(hastack):
    assert isinstance(hastack.redis, SentinelRedis)
    control = SandboxControl(hastack.sandbox.info)
    control.http.post(f"{control.clodura}/_sandbox/clodura/config", json={
        "rate_limits": {hastack.sandbox.info["clodura_api_key"]: FAST_CLODURA}}).raise_for_status()
    # Salesforce retries a message we answered 503 (the failover) soon, as it does early on.
    control.salesforce_config(om_retry_cap_s=2)
    people = [p for p in build_dataset().people if p.known and p.email_verdict == "Deliverable"][:RECORDS]
    contacts = [{"FirstName": p.first_name, "LastName": p.last_name, "Email": p.email} for p in people]
    # Half the records now; the other half are created just after the kill,
    # so their Outbound Messages meet the failover.
    ids = control.create_records("Contact", contacts[:RECORDS // 2])
    r = hastack.redis_client()
    wait_for(lambda: _done(r, ids) >= KILL_AT, TIMEOUT_S, f"{KILL_AT} records to be done")

    logs = {name: hastack.log_dir / f"{name}.log" for name in ("worker", "worker2")}
    log_sizes = {name: path.stat().st_size for name, path in logs.items()}
    old_master = hastack.redis.master_port()
    done_at_kill = _done(r, ids)
    killed_at, killed_wall = time.monotonic(), time.time()
    killed = hastack.redis.kill_master()
    ids += control.create_records("Contact", contacts[RECORDS // 2:])

    promoted = wait_for(lambda: hastack.redis.master_port() != old_master, 60, "a replica to be promoted")
    promoted_s = time.monotonic() - killed_at
    # Its supervisor starts the dead server again; the Sentinels make it a
    # replica of the new master, so acknowledgements (WAIT 1) are possible again.
    hastack.redis.restart(killed)
    wait_for(lambda: _done(r, ids) > done_at_kill, TIMEOUT_S, "work to flow after the failover", interval=0.1)
    flowing_s = time.monotonic() - killed_at
    try:
        wait_for(lambda: _done(r, ids) == RECORDS, TIMEOUT_S, "every record to be done", interval=0.5)
    except TimeoutError:
        pytest.fail(f"not every record done: {_unfinished(r, ids)}")
    print(f"\nfailover: replica promoted {promoted_s:.1f}s after the kill, work flowing again after "
          f"{flowing_s:.1f}s; {done_at_kill} of {RECORDS} done at the kill")
    assert promoted

    # Acknowledgements after the failover waited for the restarted replica.
    assert int(r.info("commandstats")["cmdstat_wait"]["calls"]) > 0
    # Nothing acknowledged was lost: Salesforce got an ACK for every record, and each is done.
    # A delivery refused (503) after its job was kept is sent again by the
    # org, a moment later: wait for those acknowledgements.
    def notes() -> list[dict]:
        return [n for n in control.outbound_log()["notifications"] if n["record_id"] in set(ids)]
    try:
        wait_for(lambda: [n["state"] for n in notes()] == ["acked"] * RECORDS, 60, "every notification acked")
    except TimeoutError:
        pytest.fail(f"not every notification acked: {Counter(n['state'] for n in notes())}")
    outbound = control.outbound_log()
    refused = [d for d in outbound["deliveries"] if d["t"] > killed_wall and not d["acked"]]
    acked_after = sum(1 for n in notes() if n["acked_at"] > killed_wall)
    print(f"Outbound Messages: {acked_after} notifications "
          f"acknowledged after the kill, {len(refused)} deliveries refused (503) during the failover")
    enrich_calls = [e for e in control.log("clodura") if e["path"] == "/api/v1/cleanup/enrich"]
    # A call whose answer arrived while no master could keep it is asked
    # again: at most one per task running at the kill (README, failover).
    in_flight = 2 * CONCURRENCY
    print(f"Clodura enrich calls: {len(enrich_calls)} for {RECORDS} records "
          f"({len(enrich_calls) - RECORDS} repeated; allowed {in_flight})")
    assert RECORDS <= len(enrich_calls) <= RECORDS + in_flight
    for rid in ids:
        writes = control.record("Contact", rid)["writes"]
        assert writes and all(w["fields"] == writes[0]["fields"] for w in writes), rid

    # Both workers consumed again after the failover (the known Celery
    # failure is a worker that reconnects and then takes nothing).
    for name, path in logs.items():
        with path.open("rb") as log:
            log.seek(log_sizes[name])
            assert b"succeeded in" in log.read(), f"{name} ran no task after the failover"
    # Beat follows the master too: its heartbeat is on the new one, written after the kill.
    beat_written = wait_for(lambda: float((r.get(keys.BEAT_HEARTBEAT) or "0").split()[0]) > time.time()
                            - (time.monotonic() - killed_at), 30, "beat's heartbeat on the new master")
    assert beat_written
    for name in ("web", "worker", "worker2", "beat"):
        assert hastack.processes[name].poll() is None, f"{name} died in the failover"
