"""The worker process: `celery -A worker.app worker` (and `beat`).

Settings are checked and logging configured before anything else; the
Celery app gets its configuration and the whole beat schedule here, and the
task modules are imported explicitly so that every task is registered."""
from __future__ import annotations

import sys

from celery.signals import worker_init
from kombu.transport import redis as kombu_redis
from redis.exceptions import RedisError

from crm_enrich.field_map import FieldMapError, load_field_map
from crm_enrich.flow.account import component_warnings
from crm_enrich.logs import configure_logging, log
from crm_enrich.queues import create_celery, exit_on_unsafe_redis
from crm_enrich.salesforce.schema import check_field_map_at_start, save_field_map_check
from crm_enrich.settings import exit_on_bad_settings

from . import heartbeat, operation_tasks, tasks
from .schedule import beat_schedule
from .services import services


def _survive_a_closed_channel() -> None:
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

    kombu_redis.QoS.restore_unacked = restore_unacked  # type: ignore[method-assign]  # a bug fix, see above

    # The same closed channel fails the acknowledgement of a task that
    # finished just as the connection went (a Redis restart, a Sentinel
    # failover): AttributeError in `_connparams` again, "Unrecoverable
    # error", the worker gone. The message is still in `unacked` and comes
    # back after VISIBILITY_TIMEOUT_S; its replay is a no-op (the job's state
    # and kept answers). The delivery is counted as done, as kombu's own ack
    # does, so the worker's prefetch window does not shrink.
    original_ack = kombu_redis.QoS.ack

    def ack(self, delivery_tag):
        try:
            return original_ack(self, delivery_tag)
        except AttributeError:
            super(kombu_redis.QoS, self).ack(delivery_tag)
            log.warning("broker.ack_skipped", note="the message comes back after the visibility timeout")
            return None

    kombu_redis.QoS.ack = ack  # type: ignore[method-assign]  # a bug fix, see above


_survive_a_closed_channel()
settings = exit_on_bad_settings()
configure_logging(settings.log_level)
exit_on_unsafe_redis(settings)  # the worker and beat alike
app = create_celery(settings)
app.conf.beat_schedule = beat_schedule(settings)
# `celery beat` without --schedule keeps its schedule here (DATA_DIR), and
# writes its heartbeat from its own loop.
app.conf.beat_schedule_filename = str(settings.beat_schedule_file)
app.conf.beat_scheduler = "worker.beat:HeartbeatScheduler"

TASK_MODULES = (tasks, operation_tasks, heartbeat)  # registered with the app above


@worker_init.connect
def _check_field_map(**_) -> None:
    """A mapped field the org lacks (or the integration user cannot update)
    would fail every write of its record: the worker leaves it out, says so
    once, and stores the finding for /readyz and the dashboard. With
    FIELD_MAP_STRICT it refuses to start instead. (A map naming an unknown
    source or rule never gets here: load_field_map refuses it.) Mapped
    Account fields the settings keep empty (CLODURA_ORG_COMPONENTS) are
    only warned about."""
    try:
        svc = services()
        svc.store.migrate_state_index()  # sets of an older version become sorted sets
        field_map = load_field_map(svc.settings.field_map)
    except FieldMapError as exc:  # a typo in our own file: never start
        print(f"crm-enrich: the field map is invalid: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(3) from None
    svc.schema.forget(list(field_map.objects))  # the pool processes then share this fresh answer
    check = check_field_map_at_start(field_map, svc.schema)
    if check.problems and svc.settings.field_map_strict:
        print("crm-enrich: the field map does not fit the org (FIELD_MAP_STRICT is on):\n  "
              + "\n  ".join(map(str, check.problems)), file=sys.stderr, flush=True)
        raise SystemExit(3)
    save_field_map_check(svc.store.r, check)
    if check.problems:
        log.warning("field_map.fields_left_out", fields=[p.name for p in check.problems],
                    problems=[str(p) for p in check.problems])
    for warning in component_warnings(svc.field_map, svc.settings.org_components_allowed):
        log.warning("field_map.unfilled", problem=warning)
