"""The web process: receives, authenticates, de-duplicates, enqueues and
answers. It does no provider or Salesforce work itself."""
from __future__ import annotations

from flask import Flask

from crm_enrich.logs import configure_logging
from crm_enrich.settings import Settings, exit_on_bad_settings
from crm_enrich.worker.celery_app import ENRICH_RECORD, create_celery, queue_for
from crm_enrich.worker.jobs import JobStore

# Publishing to a broker that is down must fail fast so we can answer 503
# while Salesforce's own request (60 s timeout) is still open.
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or exit_on_bad_settings()
    configure_logging(settings.log_level)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["SECRET_KEY"] = settings.secret_key
    # The dashboard's session cookie: signed with SECRET_KEY, never sent by
    # script, over plain HTTP or from another site.
    app.config.update(SESSION_COOKIE_SECURE=True, SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_NAME="crm_enrich_admin",
                      PERMANENT_SESSION_LIFETIME=12 * 3600)

    celery = create_celery(settings, name="crm_enrich_web")
    store = JobStore.from_url(settings.redis_url)

    def enqueue(job_id: str, source: str) -> None:
        celery.send_task(ENRICH_RECORD, args=[job_id], queue=queue_for(source),
                         retry=True, retry_policy=PUBLISH_RETRY)

    def send_task(name: str, args: list) -> None:
        celery.send_task(name, args=args, retry=True, retry_policy=PUBLISH_RETRY)

    app.extensions["crm_enrich"] = {"settings": settings, "store": store, "enqueue": enqueue,
                                    "send_task": send_task}

    from crm_enrich.web import admin, callbacks, events, health, metrics, openapi, outbound_message

    app.register_blueprint(outbound_message.bp)
    app.register_blueprint(events.bp)
    app.register_blueprint(callbacks.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(openapi.bp)
    return app


def services() -> dict:
    from flask import current_app

    return current_app.extensions["crm_enrich"]
