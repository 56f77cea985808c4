"""The last step of every job: what the field map says to change, fitted
to the org's fields, queued for a batched write (salesforce.batches); the
job is done at once when nothing changes. The flush reads the record again
before it writes and sends only what the rules still allow then."""
from __future__ import annotations

from crm_enrich.field_map import fit_changes, plan_changes
from crm_enrich.jobs.state import State
from crm_enrich.jobs.store import Job, load_tracked_hashes
from crm_enrich.queues import EVENT_SOURCES
from crm_enrich.salesforce.batches import queue_write

from .services import Services

NOT_OFFERED = "the restricted picklist does not offer the value"


def write_back(svc: Services, job: Job, record: dict, sources: dict, verified_email: str | None = None) -> str:
    """`verified_email`: the address the verification in `sources` is about."""
    store = svc.store
    tracked = load_tracked_hashes(store, job.object, job.record_id)
    planned = plan_changes(svc.field_map, job.object, record, sources, tracked)
    fitted = fit_changes(planned, svc.schema.describe(job.object))
    skipped = {name: NOT_OFFERED for name in planned if name not in fitted}
    changes = {name: value for name, value in fitted.items() if record.get(name) != value}
    if not changes:
        store.transition(job, State.DONE, fields_written=[], fields_skipped=skipped, last_error=None)
        return job.state
    rules = svc.field_map.rules_for(job.object)
    queue_write(svc.batches, job.id, job.object, job.record_id, changes,
                {r.field: r.rule for r in rules if r.field in changes}, urgent=job.source in EVENT_SOURCES,
                verified_email=verified_email,
                verification_fields=tuple(r.field for r in rules if r.source.startswith("verification.")))
    store.transition(job, State.WRITING, fields_skipped=skipped)
    return job.state
