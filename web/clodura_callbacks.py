"""POST /clodura/callbacks/<token>: Clodura's asynchronous results.

Verify the token (it names the job and the step), check the body, store the
result once, and queue the job's next step. No provider work here.
"""
from __future__ import annotations

import json
import time

import redis
from flask import Blueprint, jsonify, request
from kombu.exceptions import OperationalError

from crm_enrich import counters
from crm_enrich.flow import callbacks
from crm_enrich.logs import log
from web.context import context

bp = Blueprint("clodura_callbacks", __name__)


def _answer(status: int, **body):
    return jsonify(body), status


@bp.post("/clodura/callbacks/<token>")
def receive(token: str):
    svc = context()
    named = callbacks.read_token(svc.settings, token)
    if named is None:
        log.warning("callback.refused", reason="unknown, forged or expired token")
        return _answer(404, error="unknown callback")
    job_id, step = named
    try:
        body = json.loads(request.get_data(cache=False))
    except (ValueError, UnicodeDecodeError):
        return _answer(400, error="body is not valid JSON")
    if not isinstance(body, dict) or callbacks.provider_job_id(body) is None:
        return _answer(400, error="body must be a JSON object with the job's id "
                                  f"(one of {', '.join(callbacks.ID_FIELDS)})")
    if not callbacks.is_final(step, body):
        return _answer(200, applied=False, reason="not a final result")
    store = svc.store
    try:
        job = store.get(job_id)
        if job is None:
            return _answer(404, error="unknown callback")
        if not callbacks.store_result(store.r, job_id, step, body):
            log.info("callback.repeat", job_id=job_id, step=step)
            return _answer(200, applied=False, reason="already applied")
        # Only the step's own note, for the delay metric.
        pending = json.loads(store.r.hget(store.provider_key(job_id), callbacks.pending_field(step)) or "{}")
    except redis.RedisError:
        return _answer(503, error="temporarily unable to store the result; retry")
    if pending.get("sent_at"):
        counters.observe(store.r, "callback_delay_seconds", time.time() - pending["sent_at"], step=step)
    counters.incr(store.r, "callbacks_applied", step=step)
    try:
        svc.enqueue(job_id, job.source)
    except (OperationalError, redis.RedisError, OSError) as exc:
        # The result is stored: the sweeper resumes jobs whose result waits.
        log.warning("callback.enqueue_failed", job_id=job_id, error=type(exc).__name__)
    log.info("callback.applied", job_id=job_id, record_id=job.record_id, step=step)
    return _answer(200, applied=True)
