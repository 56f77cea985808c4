"""Beat's scheduler: Celery's own (the schedule kept in a file under
DATA_DIR) that also writes beat's sign of life, `beat:heartbeat`, from
beat's own loop, so `crm-enrich doctor` can tell beat is running even when
no worker takes its tasks."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import redis
from celery.beat import PersistentScheduler

from crm_enrich import keys
from crm_enrich.logs import log
from crm_enrich.redis_connection import redis_client
from crm_enrich.settings import get_settings

from .schedule import BEAT_HEARTBEAT_EVERY_S


class HeartbeatScheduler(PersistentScheduler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The data directory may not exist yet on a fresh host or volume.
        if kwargs.get("schedule_filename"):
            Path(kwargs["schedule_filename"]).parent.mkdir(parents=True, exist_ok=True)
        self._redis = redis_client(get_settings(), decode_responses=False)
        self._last_beat = 0.0
        super().__init__(*args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        delay = super().tick(*args, **kwargs)
        if time.monotonic() - self._last_beat >= BEAT_HEARTBEAT_EVERY_S:
            self._write_heartbeat()
        return min(delay, BEAT_HEARTBEAT_EVERY_S)

    def _write_heartbeat(self) -> None:
        try:
            self._redis.set(keys.BEAT_HEARTBEAT, f"{time.time():.3f} {socket.gethostname()} {os.getpid()}",
                            ex=keys.BEAT_HEARTBEAT_TTL_S)
            self._last_beat = time.monotonic()
        except redis.RedisError as exc:  # never let a heartbeat stop the schedule
            log.warning("beat.heartbeat_failed", error=type(exc).__name__)
