"""Entry point for `celery -A crm_enrich.worker.main worker|beat`."""
import sys

from celery.signals import worker_init

from crm_enrich.logs import configure_logging
from crm_enrich.settings import exit_on_bad_settings
from crm_enrich.worker.celery_app import create_celery

settings = exit_on_bad_settings()
configure_logging(settings.log_level)
app = create_celery(settings)

import crm_enrich.worker.tasks  # noqa: E402,F401  (registers the tasks)


@worker_init.connect
def _check_field_map(**_):
    """A field map that names a field the org lacks would fail every write:
    refuse to start, naming the field. Mapped Account fields the settings
    keep empty (CLODURA_ORG_COMPONENTS) are only warned about."""
    from crm_enrich.logs import log
    from crm_enrich.worker.company import component_warnings
    from crm_enrich.worker.org_schema import check_field_map_at_start

    svc = crm_enrich.worker.tasks.services()
    problems = check_field_map_at_start(svc.field_map, svc.schema)
    if problems:
        print("crm-enrich: the field map does not fit the org:\n  " + "\n  ".join(problems),
              file=sys.stderr, flush=True)
        raise SystemExit(3)
    for warning in component_warnings(svc.field_map, svc.settings.org_components_allowed):
        log.warning("field_map.unfilled", problem=warning)


import crm_enrich.worker.admin_tasks  # noqa: E402,F401  (admin tasks, worker heartbeat)
import crm_enrich.worker.reverify  # noqa: E402,F401  (scheduled re-verification)
