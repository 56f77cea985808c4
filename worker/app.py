"""The worker process: `celery -A worker.app worker` (and `beat`).

Settings are checked and logging configured before anything else; the
Celery app gets its configuration and the whole beat schedule here, and the
task modules are imported explicitly so that every task is registered."""
from __future__ import annotations

import sys

from celery.signals import worker_init
from kombu.transport import redis as kombu_redis
from redis.exceptions import RedisError

from crm_enrich.flow.account import component_warnings
from crm_enrich.logs import configure_logging, log
from crm_enrich.queues import create_celery, exit_on_unsafe_redis
from crm_enrich.salesforce.schema import check_field_map_at_start
from crm_enrich.settings import exit_on_bad_settings

from . import heartbeat, operation_tasks, tasks
from .schedule import beat_schedule
from .services import services


def _survive_restore_after_connection_loss() -> None:
    """kombu's Redis channel, closed because the connection to Redis was
    lost, tries to put its unacknowledged messages back and dies in
    `_connparams` (AttributeError: 'NoneType' object has no attribute
    'hostname'), taking the whole worker with it ("Unrecoverable error").
    Those messages are still in the broker's `unacked` hash, which Redis
    keeps (AOF), and come back by themselves after VISIBILITY_TIMEOUT_S: the
    restore may be skipped safely, and the worker reconnects instead."""
    original = kombu_redis.QoS.restore_unacked

    def restore_unacked(self, client=None):
        try:
            return original(self, client)
        except (AttributeError, RedisError) as exc:
            self._delivered.clear()
            log.warning("broker.restore_skipped", error=type(exc).__name__,
                        note="unacked messages come back after the visibility timeout")
            return None

    kombu_redis.QoS.restore_unacked = restore_unacked


_survive_restore_after_connection_loss()
settings = exit_on_bad_settings()
configure_logging(settings.log_level)
exit_on_unsafe_redis(settings)  # the worker and beat alike
app = create_celery(settings)
app.conf.beat_schedule = beat_schedule(settings)

TASK_MODULES = (tasks, operation_tasks, heartbeat)  # registered with the app above


@worker_init.connect
def _check_field_map(**_) -> None:
    """A field map that names a field the org lacks would fail every write:
    refuse to start, naming the field. Mapped Account fields the settings
    keep empty (CLODURA_ORG_COMPONENTS) are only warned about."""
    svc = services()
    svc.store.migrate_state_index()  # sets of an older version become sorted sets
    problems = check_field_map_at_start(svc.field_map, svc.schema)
    if problems:
        print("crm-enrich: the field map does not fit the org:\n  " + "\n  ".join(problems),
              file=sys.stderr, flush=True)
        raise SystemExit(3)
    for warning in component_warnings(svc.field_map, svc.settings.org_components_allowed):
        log.warning("field_map.unfilled", problem=warning)
