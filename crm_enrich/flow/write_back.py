"""The last step of every job: what the field map says to change, fitted
to the org's fields, queued for a batched write (salesforce.batches); the
job is done at once when nothing changes."""
from __future__ import annotations

from crm_enrich.field_map import fit_changes, plan_changes
from crm_enrich.jobs.state import State
from crm_enrich.jobs.store import Job, load_tracked_hashes
from crm_enrich.queues import EVENT_SOURCES
from crm_enrich.salesforce.batches import queue_write

from .services import Services

# A partner job still this far from its write is worth waiting for.
ON_ITS_WAY = frozenset({State.RECEIVED, State.ENRICHING, State.VERIFYING})


def write_back(svc: Services, job: Job, record: dict, sources: dict, partner_job: str | None = None) -> str:
    """`partner_job`: a job whose write may share this one's call (a
    Contact's Account's, or an Account's Contact's); waited for while it
    is still on its way."""
    store = svc.store
    tracked = load_tracked_hashes(store, job.object, job.record_id)
    planned = plan_changes(svc.field_map, job.object, record, sources, tracked)
    fitted = fit_changes(planned, svc.schema.describe(job.object))
    changes = {name: value for name, value in fitted.items() if record.get(name) != value}
    if not changes:
        store.transition(job, State.DONE, fields_written=[], last_error=None)
        return job.state
    tracked_fields = [r.field for r in svc.field_map.rules_for(job.object) if r.rule == "tracked"]
    if partner_job and store.r.hget(store.job_key(partner_job), "state") not in ON_ITS_WAY:
        partner_job = None
    # Writing first: a batch may be sent the moment the item is queued, and
    # its flush must find the job waiting for it, not a step behind.
    store.transition(job, State.WRITING)
    queue_write(svc.batches, job.id, job.object, job.record_id, changes, tracked_fields,
                urgent=job.source in EVENT_SOURCES, partner_job=partner_job)
    return job.state
