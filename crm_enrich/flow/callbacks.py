"""Clodura's asynchronous results (docs/clodura.md#asynchronous-results): the callback
URL we hand it, and storing a result on its job exactly once.

The URL carries a token that names one job and one step, signed with
SECRET_KEY and timestamped, so the receiver needs no lookup to tell a real
callback from a forged or stale one. Results are stored whether they come
by callback or by the sweeper's polling; whichever comes first wins and
the job runs its next step.
"""
from __future__ import annotations

import json
import time

import redis
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from crm_enrich import keys
from crm_enrich.settings import Settings

SALT = "crm-enrich.clodura-callback"
STEPS = ("reveal_email", "reveal_phone", "verify", "verify_deep")
# The job id's field name is not documented; accept every candidate.
ID_FIELDS = ("trackingId", "requestId", "docId", "id", "_id")


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.secret_key, salt=SALT)


def make_token(settings: Settings, job_id: str, step: str) -> str:
    return _serializer(settings).dumps([job_id, step])


def callback_url(settings: Settings, job_id: str, step: str) -> str:
    base = str(settings.public_base_url).rstrip("/")
    return f"{base}/clodura/callbacks/{make_token(settings, job_id, step)}"


def read_token(settings: Settings, token: str) -> tuple[str, str] | None:
    """(job id, step), or None when the token is forged, malformed or expired."""
    try:
        job_id, step = _serializer(settings).loads(token, max_age=settings.callback_token_max_age_s)
    except (BadSignature, SignatureExpired, ValueError, TypeError):
        return None
    if not isinstance(job_id, str) or step not in STEPS:
        return None
    return job_id, step


def provider_job_id(body: dict) -> str | None:
    for name in ID_FIELDS:
        value = body.get(name)
        if isinstance(value, (str, int)) and str(value):
            return str(value)
    return None


def is_final(step: str, body: dict) -> bool:
    """A verification is final once Completed (its result no longer
    Pending); a reveal once its status is no longer queued/in progress."""
    status = str(body.get("status") or "").strip().lower()
    if step.startswith("verify"):
        return status == "completed" or str(body.get("result") or "").lower() not in ("", "pending")
    return status in ("completed", "not_found", "failed")


def pending_field(step: str) -> str:
    return f"pending:{step}"


def result_field(step: str) -> str:
    return f"result:{step}"


def store_result(r: redis.Redis, job_id: str, step: str, body: dict) -> bool:
    """Store a step's final result on the job; False if one was stored
    already (a duplicate callback, or the poll got there first)."""
    key = keys.job_provider_data(job_id)
    pipe = r.pipeline(transaction=True)
    pipe.hsetnx(key, result_field(step), json.dumps(body))
    # The job's provider data keeps its 24 h limit (set when first stored).
    pipe.expireat(key, int(time.time() + keys.PROVIDER_DATA_MAX_TTL_S), nx=True)
    stored, _ = pipe.execute()
    return bool(stored)
