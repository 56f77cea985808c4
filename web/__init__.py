"""The web process: receives, authenticates, de-duplicates, enqueues and
answers, one blueprint per way in. It does no provider or Salesforce work
itself: `gunicorn 'web:create_app()'`."""
from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from crm_enrich.jobs.store import JobStore
from crm_enrich.logs import configure_logging
from crm_enrich.queues import create_celery, exit_on_unsafe_redis
from crm_enrich.settings import Settings, exit_on_bad_settings

from .context import EXTENSION, WebContext


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or exit_on_bad_settings()
    configure_logging(settings.log_level)
    exit_on_unsafe_redis(settings)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["SECRET_KEY"] = settings.secret_key
    # The dashboard's session cookie: signed with SECRET_KEY, never sent by
    # script, over plain HTTP or from another site.
    app.config.update(SESSION_COOKIE_SECURE=True, SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_NAME="crm_enrich_admin",
                      PERMANENT_SESSION_LIFETIME=12 * 3600)
    store = JobStore.from_settings(settings)
    store.migrate_state_index()  # sets of an older version become sorted sets
    if settings.trusted_proxy_hops:
        # The client address (SALESFORCE_ALLOWED_NETWORKS) is the one the
        # nearest trusted proxies saw, not the proxy's own.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxy_hops,  # type: ignore[method-assign]
                                x_proto=settings.trusted_proxy_hops)
    app.extensions[EXTENSION] = WebContext(
        settings=settings, store=store,
        celery=create_celery(settings, name="crm_enrich_web"))

    from . import admin, clodura_callbacks, events, health, metrics, openapi, outbound_message

    for blueprint in (outbound_message.bp, events.bp, clodura_callbacks.bp, health.bp, metrics.bp,
                      admin.bp, openapi.bp):
        app.register_blueprint(blueprint)
    return app
