"""The last step of every job: what the field map says to change, fitted
to the org's fields, queued for a batched write (salesforce.batches) with
the reason for each change, which the change log keeps once the write is
confirmed; the job is done at once when nothing changes. The flush reads
the record again before it writes and sends only what the rules still
allow then."""
from __future__ import annotations

from crm_enrich import keys
from crm_enrich.field_map import fit_changes, plan_explained
from crm_enrich.jobs.state import JobMoved, State
from crm_enrich.jobs.store import Job, load_tracked_hashes
from crm_enrich.queues import EVENT_SOURCES
from crm_enrich.salesforce.batches import READ_AT, queue_write

from .services import Services

# Who a source's value comes from, unless the job says otherwise (a
# revealed email's finder, the verdict's verifier).
DEFAULT_PROVIDERS = {"person": "clodura", "organisation": "clodura", "email": "clodura", "phone": "clodura",
                     "verification": "clodura", "signals": "clodura", "meta": "crm-enrich"}
NOT_OFFERED = "the restricted picklist does not offer the value"
# A partner job still this far from its write is worth waiting for
# (WRITEBACK_MAX_DELAY_S at most: a callback usually comes within it).
ON_ITS_WAY = frozenset({State.RECEIVED, State.ENRICHING, State.AWAITING_EMAIL, State.AWAITING_PHONE,
                        State.VERIFYING, State.AWAITING_VERIFICATION})


def provider_of(source: str, providers: dict[str, str] | None) -> str:
    if providers and source in providers:
        return providers[source]
    return DEFAULT_PROVIDERS.get(source.split(".", 1)[0], "unknown")


def write_back(svc: Services, job: Job, record: dict, sources: dict,
               providers: dict[str, str] | None = None, verified_email: str | None = None,
               partner_job: str | None = None) -> str:
    """`providers`: source -> provider, where it is not the default one;
    `verified_email`: the address the verification in `sources` is about;
    `partner_job`: a job whose write may share this one's call (a Contact's
    Account's, or an Account's Contact's), waited for while it is still on
    its way."""
    store = svc.store
    tracked = load_tracked_hashes(store, job.object, job.record_id)
    planned = plan_explained(svc.field_map, job.object, record, sources, tracked)
    fitted = fit_changes({name: p.value for name, p in planned.items()}, svc.schema.describe(job.object))
    skipped = {name: NOT_OFFERED for name in planned if name not in fitted}
    changes = {name: value for name, value in fitted.items() if record.get(name) != value}
    if not changes:
        store.transition(job, State.DONE, fields_written=[], fields_skipped=skipped, last_error=None)
        return job.state
    why = {name: {"rule": planned[name].rule, "source": planned[name].source, "was": planned[name].was,
                  "provider": provider_of(planned[name].source, providers)} for name in changes}
    rules = svc.field_map.rules_for(job.object)
    if partner_job and store.r.hget(store.job_key(partner_job), "state") not in ON_ITS_WAY:
        partner_job = None
    queue_write(svc.batches, job.id, job.object, job.record_id, changes,
                {r.field: r.rule for r in rules if r.field in changes}, urgent=job.source in EVENT_SOURCES,
                verified_email=verified_email,
                verification_fields=tuple(r.field for r in rules if r.source.startswith("verification.")),
                why=why, read_at=record.get(READ_AT), partner_job=partner_job)
    try:
        store.transition(job, State.WRITING, fields_skipped=skipped)
    except JobMoved as exc:
        # A flush sent the batch the moment the item was queued and ended
        # the job before this move: the job is already where it belongs.
        return exc.stored or job.state
    return job.state


def share_write_with(svc: Services, job_id: str, partner_job: str) -> None:
    """Let `job_id`'s write (an Account's own job, still on its way) wait
    for `partner_job`'s (a Contact's that found it), so that both go in
    one call; see `write_partner`."""
    if svc.store.r.hget(svc.store.job_key(job_id), "state") in ON_ITS_WAY:
        svc.store.r.set(keys.job_write_partner(job_id), partner_job, ex=keys.WRITE_PARTNER_TTL_S)


def write_partner(svc: Services, job_id: str) -> str | None:
    """The job a `share_write_with` named for `job_id`, if any."""
    partner = svc.store.r.get(keys.job_write_partner(job_id))
    return str(partner) if partner else None
