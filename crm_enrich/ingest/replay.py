"""Where each topic's subscription resumes: the replay id of the last event
whose records are durably queued, kept in Redis (keys.cdc_replay).

Written only after `accept_records` returned, in a pipeline that waits
for the store's acknowledged write, exactly like an Outbound Message's
ACK: a subscriber killed at any moment resumes after the last event it
queued, so nothing is skipped, and the events it queued but had not yet
recorded come again and are dropped as duplicates (their dedupe keys).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from crm_enrich import counters, keys
from crm_enrich.jobs.store import JobStore

# Stored instead of an id after Salesforce refused ours as too old: resume
# from the oldest retained event until one is queued, even after a restart.
EARLIEST = "EARLIEST"
DELIVERED = "cdc_events_delivered"   # counted against the org's event delivery allocation


@dataclass(frozen=True)
class ResumePoint:
    preset: str            # LATEST, EARLIEST or CUSTOM (the proto's ReplayPreset names)
    replay_id: bytes = b""


def resume_point(r: redis.Redis, topic: str) -> ResumePoint:
    """After the stored id; with none (a first start), the newest events
    only: what happened before the subscriber ever ran is the
    reconciliation's (or a backfill's), not 72 hours of replay."""
    stored = r.hget(keys.cdc_replay(topic), "replay_id")
    if not stored:
        return ResumePoint("LATEST")
    stored = stored.decode() if isinstance(stored, bytes) else str(stored)
    if stored == EARLIEST:
        return ResumePoint("EARLIEST")
    return ResumePoint("CUSTOM", bytes.fromhex(stored))


def save_replay(store: JobStore, topic: str, replay_id: bytes, delivered: int) -> None:
    """The topic's events up to `replay_id` are queued; `delivered` more
    events came (counted for /metrics). Raises a RedisError (NotDurable
    among them) when the write is not as durable as an ACK must be."""
    _store_position(store, topic, replay_id.hex(), delivered)


def restart_from_earliest(store: JobStore, topic: str) -> None:
    """Salesforce refused the stored id (older than its retention)."""
    _store_position(store, topic, EARLIEST, 0)


def _store_position(store: JobStore, topic: str, position: str, delivered: int) -> None:
    pipe = store.r.pipeline(transaction=False)
    pipe.hset(keys.cdc_replay(topic), mapping={"replay_id": position, "at": round(time.time(), 3)})
    if delivered:
        counters.incr(pipe, DELIVERED, delivered, topic=topic)
    store.execute_acknowledged(pipe)
