"""Liveness and readiness."""
from __future__ import annotations

import time

import redis
from flask import Blueprint, jsonify

from crm_enrich import keys
from crm_enrich.salesforce.schema import load_field_map_check
from web.context import context

bp = Blueprint("health", __name__)

# Written by every Celery worker (worker/heartbeat.py) with a
# 120 s expiry; a missing key means no worker has shown a sign of life.
HEARTBEAT_KEY = keys.WORKER_HEARTBEAT


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


def field_map_summary(check: dict | None) -> dict:
    """The field map as the last worker to start found it: mappings left out
    do not make the service unready (every other field is still written),
    but they are named here with what to do."""
    if check is None:
        return {"status": "not checked yet"}
    if not check.get("checked"):
        return {"status": "unchecked", "reason": check.get("reason")}
    left_out = [{"field": f"{p['object']}.{p['field']}" if p.get("field") else p["object"],
                 "problem": p["problem"], "fix": p["fix"]} for p in check.get("problems", [])]
    return {"status": "fields left out" if left_out else "ok", "leftOut": left_out}


@bp.get("/readyz")
def readyz():
    try:
        r = context().store.r
        r.ping()
        beat = r.get(HEARTBEAT_KEY)
        field_map = field_map_summary(load_field_map_check(r))
    except redis.RedisError:
        return jsonify({"status": "unavailable", "redis": "unreachable"}), 503
    if not beat:
        return jsonify({"status": "unavailable", "redis": "ok",
                        "worker": "no worker heartbeat in the last 120 s", "fieldMap": field_map}), 503
    try:
        age = round(max(0.0, time.time() - float(beat.split()[0])), 1)
    except ValueError:
        age = None
    return jsonify({"status": "ready", "redis": "ok", "worker": "ok", "heartbeatAgeS": age,
                    "fieldMap": field_map})
