"""Which Redis the processes talk to (one server, or the Sentinels'
master), and what an acknowledgement waits for: WAIT for a replica with
Sentinel, WAITAOF for the local fsync without, on real servers."""
from __future__ import annotations

import shutil
import subprocess
import tempfile

import pytest
import redis
import structlog
from redis.sentinel import SentinelConnectionPool
from structlog.testing import capture_logs

from crm_enrich import redis_connection
from crm_enrich.dev.devstack import free_port, wait_for
from crm_enrich.flow.intake import InboundRecord, QueueUnavailable, accept_records, forward_records
from crm_enrich.jobs.store import JobStore
from crm_enrich.queues import celery_config
from crm_enrich.redis_connection import (
    AckDurability,
    NotDurable,
    broker_sentinel_options,
    broker_url,
    redis_client,
)
from crm_enrich.settings import SettingsError, load_settings
from tests.unit.test_settings_and_logs import GOOD

SENTINEL = {k: v for k, v in GOOD.items() if k != "REDIS_URL"} | {
    "REDIS_SENTINELS": "s1:26379, s2:26380,s3:26381", "REDIS_MASTER_NAME": "crm",
    "REDIS_PASSWORD": "p@ss", "REDIS_SENTINEL_PASSWORD": "sentinel-secret"}


@pytest.fixture
def clean_env(monkeypatch):
    for key in [*GOOD, *SENTINEL]:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_sentinel_settings_give_a_sentinel_broker_and_a_master_client(clean_env):
    settings = load_settings(**{k.lower(): v for k, v in SENTINEL.items()})
    assert settings.sentinels == [("s1", 26379), ("s2", 26380), ("s3", 26381)]
    # kombu asks each Sentinel in turn; the master's password rides in the URLs.
    assert broker_url(settings) == ("sentinel://:p%40ss@s1:26379/0;sentinel://:p%40ss@s2:26380/0;"
                                    "sentinel://:p%40ss@s3:26381/0")
    assert broker_sentinel_options(settings) == {
        "master_name": "crm", "sentinel_kwargs": {"password": "sentinel-secret", "socket_timeout": 2,
                                                  "socket_connect_timeout": 2}}
    pool = redis_client(settings).connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.is_master and pool.service_name == "crm"


def test_one_redis_keeps_its_url_and_no_sentinel_options(clean_env):
    settings = load_settings(**{k.lower(): v for k, v in GOOD.items()})
    assert broker_url(settings) == GOOD["REDIS_URL"] and broker_sentinel_options(settings) == {}
    assert not isinstance(redis_client(settings).connection_pool, SentinelConnectionPool)


def test_compose_s_empty_redis_url_leaves_sentinel_in_charge(clean_env):
    """docker/compose.yaml sets both variables; the ha profile empties REDIS_URL."""
    settings = load_settings(**{k.lower(): v for k, v in (SENTINEL | {"REDIS_URL": ""}).items()})
    assert settings.redis_url is None and broker_url(settings).startswith("sentinel://")


@pytest.mark.parametrize("change, message", [
    ({"REDIS_SENTINELS": "s1"}, "REDIS_SENTINELS is invalid: .*'s1' is not host:port"),
    ({"REDIS_SENTINELS": "s1:99999"}, "REDIS_SENTINELS is invalid"),
    ({"REDIS_URL": "redis://r:6379/0"}, "REDIS_URL and REDIS_SENTINELS are both set"),
    ({"REDIS_SENTINELS": ""}, "setting REDIS_URL is missing .*REDIS_SENTINELS"),
])
def test_bad_redis_settings_are_named(clean_env, change, message):
    with pytest.raises(SettingsError, match=message):
        load_settings(**{k.lower(): v for k, v in (SENTINEL | change).items()})


def _pipe_with_a_write(client: redis.Redis) -> redis.client.Pipeline:
    pipe = client.pipeline(transaction=False)
    pipe.set("ack:test", "1")
    pipe.incr("ack:count")
    return pipe


def _calls(client: redis.Redis, command: str) -> int:
    return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def test_without_a_replica_a_sentinel_ack_is_refused_in_time(redis_client):
    durability = AckDurability(sentinel=True, replicas=1, timeout_ms=50)
    with pytest.raises(NotDurable, match="0 of 1 replicas"):
        durability.execute(_pipe_with_a_write(redis_client), redis_client)
    assert redis_client.get("ack:test") == "1"  # written, only not confirmed: the retry is a duplicate


def test_intake_refuses_what_no_replica_confirmed_and_takes_its_retry(redis_client):
    """The Outbound Message and JSON events answer 503 on QueueUnavailable;
    the sender's retry, once a replica confirms, queues nothing twice."""
    queued: list[list[str]] = []
    records = [InboundRecord(f"dedupe:ack:{i}", "Contact", f"003{i:015d}", "outbound_message") for i in range(3)]
    unconfirmed = JobStore(redis_client, AckDurability(sentinel=True, replicas=1, timeout_ms=30))
    with pytest.raises(QueueUnavailable):
        accept_records(unconfirmed, lambda ids, source: queued.append(ids), records)
    assert len(queued) == 1
    retry = accept_records(JobStore(redis_client), lambda ids, source: queued.append(ids), records)
    assert len(retry.duplicates) == 3 and not retry.accepted and len(queued) == 1


def test_a_forward_no_replica_confirmed_is_refused_and_its_retry_makes_one_job_per_event(redis_client):
    """The Outbound Message's forward waits for the replica after its
    publish; unconfirmed, it answers 503, and the retry is forwarded again:
    the intake task makes one job for each event however many times it is
    forwarded."""
    forwarded: list[list[InboundRecord]] = []
    records = [InboundRecord(f"dedupe:fwd:{i}", "Contact", f"003{i:015d}", "outbound_message") for i in range(3)]
    unconfirmed = JobStore(redis_client, AckDurability(sentinel=True, replicas=1, timeout_ms=30))
    with pytest.raises(QueueUnavailable):
        forward_records(unconfirmed, lambda recs, key: forwarded.append(recs), records)
    assert forward_records(JobStore(redis_client), lambda recs, key: forwarded.append(recs), records).forwarded == 3
    queued: list[list[str]] = []
    made = [accept_records(JobStore(redis_client), lambda ids, source: queued.append(ids), message)
            for message in forwarded]
    assert len(made[0].accepted) == 3 and made[1].accepted == [] and len(made[1].duplicates) == 3
    assert len(queued) == 1


def test_without_sentinel_an_ack_waits_for_the_aof_fsync(redis_client):
    """The embedded Valkey (9.x, AOF on) has WAITAOF: it is sent, after
    the pipeline's writes, on the same connection."""
    durability = AckDurability(sentinel=False, replicas=1, timeout_ms=1000)
    before = _calls(redis_client, "waitaof")
    assert durability.execute(_pipe_with_a_write(redis_client), redis_client) == [True, 1]
    assert _calls(redis_client, "waitaof") == before + 1


@pytest.fixture
def redis_7_0():
    """Debian's redis-server 7.0, which has no WAITAOF."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server (Debian's redis-server package) is needed for this test"
    port = free_port()
    with tempfile.TemporaryDirectory() as data:
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", data,
                                 "--appendonly", "yes", "--save", ""], stdout=subprocess.DEVNULL)
        client = redis.Redis(port=port, decode_responses=True)
        try:
            wait_for(client.ping, 20, "redis-server 7.0")
            yield client
        finally:
            proc.kill()
            proc.wait()


def test_a_server_without_waitaof_acks_on_the_write_and_says_so_once(redis_7_0, monkeypatch):
    assert redis_7_0.info("server")["redis_version"].startswith("7.0")
    durability = AckDurability(sentinel=False, replicas=1, timeout_ms=1000)
    with capture_logs() as logs:
        # The module's logger may already be cached with the app's processors
        # (an earlier test configured logging); a fresh one sees the capture.
        monkeypatch.setattr(redis_connection, "log", structlog.get_logger())
        results = [durability.execute(_pipe_with_a_write(redis_7_0), redis_7_0) for _ in range(3)]
    assert [e["event"] for e in logs].count("redis.waitaof_unsupported") == 1
    assert results == [[True, 1], [True, 2], [True, 3]]  # the pipeline's own answers, nothing waited for


def test_the_broker_follows_the_sentinels_and_its_redelivery_lock_is_short(clean_env):
    """kombu's lock for handing overdue messages back lived 300 s: a worker
    cut off while holding it (a failover) stopped every redelivery that long."""
    settings = load_settings(**{k.lower(): v for k, v in SENTINEL.items()}, visibility_timeout_s=300)
    config = celery_config(settings)
    assert config["broker_url"].startswith("sentinel://")
    options = config["broker_transport_options"]
    assert options["master_name"] == "crm" and options["unacked_mutex_expire"] == 30   # a tenth of the timeout
    short = celery_config(load_settings(**{k.lower(): v for k, v in SENTINEL.items()}, visibility_timeout_s=10,
                                        stuck_after_s=15))
    assert short["broker_transport_options"]["unacked_mutex_expire"] == 2
