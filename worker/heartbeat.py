"""The worker's sign of life: `worker:heartbeat` holds the time of the
last one, and /readyz fails once it has expired."""
from __future__ import annotations

import os
import socket
import time

import redis
from celery import shared_task
from celery.signals import heartbeat_sent, worker_ready

from crm_enrich import keys
from crm_enrich.logs import log
from crm_enrich.queues import HEARTBEAT
from crm_enrich.redis_connection import redis_client
from crm_enrich.settings import get_settings

from .schedule import HEARTBEAT_EVERY_S

_last_beat = 0.0
_redis: tuple[int, redis.Redis] | None = None


def _heartbeat_redis() -> redis.Redis:
    global _redis
    if _redis is None or _redis[0] != os.getpid():
        _redis = (os.getpid(), redis_client(get_settings(), decode_responses=False))
    return _redis[1]


def write_heartbeat(source: str) -> None:
    global _last_beat
    try:
        _heartbeat_redis().set(keys.WORKER_HEARTBEAT, f"{time.time():.3f} {socket.gethostname()} {source}",
                               ex=keys.WORKER_HEARTBEAT_TTL_S)
        _last_beat = time.monotonic()
    except Exception as exc:  # never let a heartbeat break the worker
        log.warning("worker.heartbeat_failed", error=type(exc).__name__)


@shared_task(name=HEARTBEAT, ignore_result=True, expires=keys.WORKER_HEARTBEAT_TTL_S)
def heartbeat() -> None:
    """Scheduled by beat: proves a pool process takes tasks."""
    write_heartbeat("task")


@worker_ready.connect
def _beat_on_ready(**_) -> None:
    write_heartbeat("ready")


@heartbeat_sent.connect
def _beat_with_celery(**_) -> None:
    """Celery's own event heartbeat (every 2 s in the worker's main process)
    keeps the key fresh even while the queue holds a long backlog."""
    if time.monotonic() - _last_beat >= HEARTBEAT_EVERY_S:
        write_heartbeat("event")
