"""Liveness and readiness."""
from __future__ import annotations

import time

import redis
from flask import Blueprint, jsonify

from crm_enrich import keys
from web.context import context

bp = Blueprint("health", __name__)

# Written by every Celery worker (worker/heartbeat.py) with a
# 120 s expiry; a missing key means no worker has shown a sign of life.
HEARTBEAT_KEY = keys.WORKER_HEARTBEAT


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    try:
        r = context().store.r
        r.ping()
        beat = r.get(HEARTBEAT_KEY)
    except redis.RedisError:
        return jsonify({"status": "unavailable", "redis": "unreachable"}), 503
    if not beat:
        return jsonify({"status": "unavailable", "redis": "ok",
                        "worker": "no worker heartbeat in the last 120 s"}), 503
    try:
        age = round(max(0.0, time.time() - float(beat.split()[0])), 1)
    except ValueError:
        age = None
    return jsonify({"status": "ready", "redis": "ok", "worker": "ok", "heartbeatAgeS": age})
