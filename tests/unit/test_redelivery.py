"""A dead machine's unacknowledged tasks come back after the visibility
timeout even when it died while holding the broker's restore lock (kombu's
own Redis transport and our transport options, on a real Redis)."""
from __future__ import annotations

import time

from kombu import Connection
from kombu.transport.redis import Mutex

from crm_enrich.dev.devstack import wait_for
from crm_enrich.queues import celery_config
from crm_enrich.settings import load_settings
from tests.unit.test_settings_and_logs import GOOD

VISIBILITY_TIMEOUT_S = 4


def test_a_worker_killed_holding_the_restore_lock_delays_redelivery_only_briefly(redis_url, monkeypatch):
    for key, value in {**GOOD, "REDIS_URL": redis_url, "VISIBILITY_TIMEOUT_S": str(VISIBILITY_TIMEOUT_S)}.items():
        monkeypatch.setenv(key, value)
    options = celery_config(load_settings())["broker_transport_options"]

    dead = Connection(redis_url, transport_options=options)
    queue = dead.SimpleQueue("redelivery-test")
    queue.put({"job": "j1"})
    taken = queue.get(timeout=5)       # delivered to the machine that dies: never acked
    assert taken.payload == {"job": "j1"}
    qos = queue.channel.qos
    client = queue.channel.client
    # It died inside the periodic restore, holding kombu's lock (never released).
    held = Mutex(client, qos.unacked_mutex_key, qos.unacked_mutex_expire)
    held.__enter__()  # kept referenced: a collected context manager would release the lock
    assert client.exists(qos.unacked_mutex_key)
    died_at = time.monotonic()

    other = Connection(redis_url, transport_options=options)
    try:
        survivor = other.channel()
        wait_for(lambda: survivor.qos.restore_visible(interval=1) or client.llen("redelivery-test"),
                 VISIBILITY_TIMEOUT_S + 30, "the dead machine's message to be handed back", interval=0.2)
        # kombu's default lock (300 s) would have held it up for five minutes.
        assert time.monotonic() - died_at <= VISIBILITY_TIMEOUT_S + qos.unacked_mutex_expire + 2
    finally:
        held.__exit__(None, None, None)
        other.release()
        dead.release()
