"""Entry point for `celery -A crm_enrich.worker.main worker|beat`."""
from crm_enrich.logs import configure_logging
from crm_enrich.settings import exit_on_bad_settings
from crm_enrich.worker.celery_app import create_celery

settings = exit_on_bad_settings()
configure_logging(settings.log_level)
app = create_celery(settings)

import crm_enrich.worker.tasks  # noqa: E402,F401  (registers the tasks)
