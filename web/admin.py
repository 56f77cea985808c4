"""The admin API (/admin/..., JSON, `Authorization: Bearer <ADMIN_TOKEN>`)
and the dashboard (GET /admin, same token given once, then a signed session
cookie).

Like every way in, it only receives, authenticates, enqueues and answers:
the work is in crm_enrich.operations.runs (Redis only) and in the worker tasks.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import json
import secrets
import time

import redis
from flask import Blueprint, Response, abort, jsonify, redirect, render_template, request, session, url_for
from werkzeug.exceptions import RequestEntityTooLarge

from crm_enrich import keys
from crm_enrich.flow.intake import QueueUnavailable
from crm_enrich.logs import log
from crm_enrich.operations import changes, dead_letters, operator_input, runs, views
from crm_enrich.salesforce import ids
from web.context import context

bp = Blueprint("admin", __name__)

# A dry run by condition is counted by a worker (the web never calls
# Salesforce); we wait this long for the count before answering 202.
DRY_RUN_WAIT_S = 20.0
LOGIN_LINK_TTL_S = 60


def _error(status: int, message: str):
    return jsonify({"error": message}), status


def _token_ok(given: str) -> bool:
    expected = context().settings.admin_token
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode())


def _token_fingerprint() -> str:
    """Stored in the session: changing ADMIN_TOKEN logs every session out."""
    return hashlib.sha256(context().settings.admin_token.encode()).hexdigest()[:16]


def require_token(view):
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _error(401, "missing bearer token")
        if not _token_ok(token.strip()):
            log.warning("admin.bad_token", path=request.path)
            return _error(403, "invalid token")
        return view(*args, **kwargs)

    return wrapper


def _json_body():
    try:
        body = request.get_data(cache=False)
    except RequestEntityTooLarge:
        abort(413)
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _NOT_JSON


_NOT_JSON = object()


@bp.errorhandler(413)
def _too_large(_exc):
    return _error(413, "body too large")


# ---------------------------------------------------------------------------
# API
# ---------------------------------------------------------------------------

def _send_task(name: str, args: list) -> None:
    context().send_task(name, args)


def _start(kind: str):
    payload = _json_body()
    if payload is _NOT_JSON:
        return _error(400, "body is not valid JSON")
    try:
        req = operator_input.parse_rerun(payload, kind=kind)
    except operator_input.InvalidRequest as exc:
        return _error(400, str(exc))
    store = context().store
    try:
        started = runs.start_rerun(store, context().enqueue_jobs, _send_task, req)
    except (QueueUnavailable, redis.RedisError, OSError) as exc:
        log.warning("admin.rerun_unavailable", error=type(exc).__name__)
        return _error(503, "temporarily unable to queue; retry")
    except Exception as exc:  # kombu OperationalError from send_task
        if type(exc).__name__ == "OperationalError":
            return _error(503, "temporarily unable to queue; retry")
        raise
    if req.dry_run:
        if "runId" not in started:
            return jsonify(started), 200
        return _await_count(store, started["runId"])
    log.info("admin.run_started", run_id=started["runId"], kind=req.kind, object=req.object,
             selection="ids" if req.ids is not None else "where", force=req.force)
    return jsonify(started), 202


def _await_count(store, run_id: str):
    deadline = time.monotonic() + DRY_RUN_WAIT_S
    while time.monotonic() < deadline:
        run = runs.get_run(store, run_id)
        if run and run["status"] == "estimated":
            return jsonify({**runs.estimate_of(run), "runId": run_id}), 200
        if run and run["status"] == "failed":
            return _error(400, f"Salesforce refused the selection: {run.get('error', '')}")
        time.sleep(0.1)
    return jsonify({"runId": run_id, "status": "counting"}), 202


@bp.post("/admin/rerun")
@require_token
def rerun():
    return _start("rerun")


@bp.post("/admin/backfill")
@require_token
def backfill():
    return _start("backfill")


@bp.get("/admin/runs/<run_id>")
@require_token
def run_status(run_id: str):
    run = runs.get_run(context().store, run_id) if len(run_id) == 32 else None
    return jsonify(run) if run else _error(404, "no such run")


@bp.get("/admin/jobs/<job_id>")
@require_token
def job_status(job_id: str):
    job = views.get_job(context().store, job_id)
    return jsonify(job) if job else _error(404, "no such job")


@bp.get("/admin/records/<object_type>/<record_id>")
@require_token
def record_status(object_type: str, record_id: str):
    if object_type not in ids.OBJECTS:
        return _error(400, f"object must be one of {list(ids.OBJECTS)}")
    if not ids.SF_ID.match(record_id):
        return _error(400, "not a 15- or 18-character Salesforce id")
    record = _record(object_type, record_id)
    return jsonify(record) if record else _error(404, "no job or change for this record")


def _record(object_type: str, record_id: str) -> dict | None:
    ctx = context()
    return views.get_record(ctx.store, object_type, record_id, changes.change_log(ctx.store.r, ctx.settings))


@bp.get("/admin/changes.csv")
@require_token
def changes_csv():
    """Every field written in a period, one line each, oldest first: no values."""
    try:
        since, until = changes.parse_period(request.args.to_dict())
    except operator_input.InvalidRequest as exc:
        return _error(400, str(exc))
    ctx = context()
    rows = changes.export_csv(changes.change_log(ctx.store.r, ctx.settings), since, until)
    return Response(rows, mimetype="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="changes.csv"'})


@bp.get("/admin/failed")
@require_token
def failed():
    rows = dead_letters.failed_jobs(context().store)
    return jsonify({"count": len(rows), "jobs": rows})


def _replay(job_ids):
    try:
        return dead_letters.replay_failed(context().store, context().enqueue_jobs, job_ids)
    except QueueUnavailable:
        return None


@bp.post("/admin/failed/replay")
@require_token
def replay():
    payload = _json_body()
    if payload is _NOT_JSON:
        return _error(400, "body is not valid JSON")
    try:
        job_ids = operator_input.parse_replay(payload)
    except operator_input.InvalidRequest as exc:
        return _error(400, str(exc))
    result = _replay(job_ids)
    if result is None:
        return _error(503, "temporarily unable to queue; retry")
    log.info("admin.replayed", replayed=result["replayed"], skipped=result["skipped"])
    return jsonify(result), 202


@bp.post("/admin/login-link")
@require_token
def login_link():
    """A one-time dashboard link, valid one minute: for opening the
    dashboard in a browser that cannot be handed the token (and for the
    browser test). The token itself never appears in a URL."""
    nonce = secrets.token_urlsafe(24)
    context().store.r.set(keys.admin_login(nonce), "1", ex=LOGIN_LINK_TTL_S)
    return jsonify({"url": url_for("admin.login_with_link", nonce=nonce), "expiresIn": LOGIN_LINK_TTL_S}), 201


# ---------------------------------------------------------------------------
# Dashboard
# ---------------------------------------------------------------------------

def _logged_in() -> bool:
    return session.get("admin") is True and hmac.compare_digest(
        str(session.get("tk", "")), _token_fingerprint())


def _log_in() -> None:
    session.clear()
    session.permanent = True
    session["admin"] = True
    session["tk"] = _token_fingerprint()
    session["csrf"] = secrets.token_urlsafe(24)


@bp.get("/admin")
def dashboard():
    if not _logged_in():
        return render_template("admin_login.html", error=None), 200
    data = views.overview(context().store, context().settings)
    peak = max([b["done"] for b in data["throughput"]] + [1])
    return render_template("admin_dashboard.html", d=data, peak=peak, csrf=session["csrf"],
                           message=request.args.get("message"),
                           fmt_time=lambda t: time.strftime("%H:%M", time.localtime(t)) if t else "",
                           fmt_datetime=lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
                           if t else "")


@bp.get("/admin/dashboard/records/<object_type>/<record_id>")
def dashboard_record(object_type: str, record_id: str):
    """A record's page: its last job and what crm-enrich changed on it."""
    if not _logged_in():
        return render_template("admin_login.html", error="Please log in."), 401
    if object_type not in ids.OBJECTS or not ids.SF_ID.match(record_id):
        return render_template("admin_record.html", object_type=object_type, record_id=record_id, record=None,
                               error="Not a record: give Contact, Lead or Account and a Salesforce id.",
                               fmt_datetime=_fmt_datetime), 400
    record = _record(object_type, record_id)
    return render_template("admin_record.html", object_type=object_type, record_id=record_id, record=record,
                           error=None, fmt_datetime=_fmt_datetime), 200 if record else 404


@bp.get("/admin/dashboard/record")
def dashboard_find_record():
    """The dashboard's look-up form: Object and Id to the record's page."""
    return redirect(url_for("admin.dashboard_record", object_type=request.args.get("object", "").strip() or "-",
                            record_id=request.args.get("id", "").strip() or "-"), code=303)


def _fmt_datetime(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else ""


@bp.post("/admin/login")
def login():
    token = request.form.get("token", "")
    if not token or not _token_ok(token):
        log.warning("admin.login_refused")
        return render_template("admin_login.html", error="That token is not valid."), 403
    _log_in()
    return redirect(url_for("admin.dashboard"), code=303)


@bp.get("/admin/login/<nonce>")
def login_with_link(nonce: str):
    if not context().store.r.getdel(keys.admin_login(nonce)):
        return render_template("admin_login.html", error="That link has expired or was used."), 403
    _log_in()
    return redirect(url_for("admin.dashboard"), code=303)


def _csrf_ok() -> bool:
    given = request.form.get("csrf", "")
    return bool(given) and hmac.compare_digest(given, str(session.get("csrf", "")))


@bp.post("/admin/logout")
def logout():
    if _logged_in() and _csrf_ok():
        session.clear()
    return redirect(url_for("admin.dashboard"), code=303)


@bp.post("/admin/dashboard/replay")
def dashboard_replay():
    if not _logged_in():
        return render_template("admin_login.html", error="Please log in."), 401
    if not _csrf_ok():
        return render_template("admin_login.html", error="The form expired; reload the dashboard."), 403
    if request.form.get("all") == "1":
        job_ids = None
    else:
        try:
            job_ids = operator_input.parse_replay({"jobIds": request.form.getlist("job")})
        except operator_input.InvalidRequest as exc:
            return redirect(url_for("admin.dashboard", message=str(exc)), code=303)
    result = _replay(job_ids)
    message = "Queue unavailable; retry." if result is None else f"Replayed {result['replayed']} job(s)."
    return redirect(url_for("admin.dashboard", message=message), code=303)
