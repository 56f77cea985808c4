"""Liveness and readiness."""
from __future__ import annotations

import redis
from flask import Blueprint, jsonify

from crm_enrich.web import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    try:
        services()["store"].r.ping()
    except redis.RedisError:
        return jsonify({"status": "unavailable", "redis": "unreachable"}), 503
    return jsonify({"status": "ready"})
