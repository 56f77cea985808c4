"""The worker process: the Celery app (worker.app), the beat schedule, the
services each process builds once, and the thin tasks over crm_enrich.flow
and crm_enrich.operations."""
