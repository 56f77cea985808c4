"""A `Services` for the flow's unit tests, and a few helpers to drive a job:
fakes at the edges (providers, Salesforce, the task queue), our own
Redis-backed parts for real."""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

from crm_enrich import keys
from crm_enrich.field_map import load_field_map
from crm_enrich.flow.account import advance_account
from crm_enrich.flow.person import advance_person
from crm_enrich.flow.record import fields_to_read
from crm_enrich.flow.run import process_job
from crm_enrich.flow.services import Services
from crm_enrich.jobs.store import Job, JobStore
from crm_enrich.providers.cache import ProviderCache
from crm_enrich.providers.quota import Quota
from crm_enrich.salesforce.api_guard import ApiGuard
from crm_enrich.salesforce.batch_queue import BatchQueue
from crm_enrich.salesforce.batches import BatchServices, flush_reads, flush_writes
from crm_enrich.salesforce.schema import OrgSchema
from crm_enrich.settings import load_settings
from tests.unit.flow.fakes import FakeClearout, FakeClodura, FakeSalesforce, FakeTasks
from tests.unit.test_settings_and_logs import GOOD

SETTINGS = {k.lower(): v for k, v in GOOD.items()}
INTEGRATION_USER = "0055g00000IntUsrAAA"
SOMEONE_ELSE = "0055g00000HumanUAAB"
CONTACT_ID, LEAD_ID, ACCOUNT_ID = "0035g00000QwErTAAB", "00Q5g00000LeadXAAC", "0015g00000AcmeXAAA"
CREATED = "2026-11-20T09:00:00.000+0000"
EDITED = "2026-11-21T09:59:00.000+0000"
RUNNER = "task-1"


@dataclass
class Flow:
    svc: Services
    clodura: FakeClodura
    clearout: FakeClearout
    salesforce: FakeSalesforce
    tasks: FakeTasks

    @property
    def store(self) -> JobStore:
        return self.svc.store

    # -- records and jobs ------------------------------------------------------
    def record(self, object_type: str, record_id: str, **fields) -> dict:
        """A record in the fake org, last changed by someone else after its creation."""
        audit = {"CreatedDate": CREATED, "LastModifiedDate": EDITED, "LastModifiedById": SOMEONE_ELSE}
        return self.salesforce.add(object_type, record_id, **{**audit, **fields})

    def contact(self, record_id: str = CONTACT_ID, **fields) -> dict:
        return self.record("Contact", record_id, **{"FirstName": "Dana", "LastName": "Rivers",
                                                    "Email": "dana@acme.example", "AccountId": None,
                                                    "Account.Name": "Acme Inc", **fields})

    def new_job(self, object_type: str, record_id: str, source: str = "outbound_message",
                fields: dict | None = None, force: bool = False) -> str:
        """A queued job for an event that carried only `fields` (the rest is read)."""
        job, duplicate = self.store.create_unless_seen(f"{source}:{record_id}:{uuid.uuid4().hex[:8]}",
                                                       object_type, record_id, source, fields or {}, force=force)
        assert not duplicate
        self.store.mark_enqueued(job.id)
        return job.id

    def complete_input(self, object_type: str, record: dict) -> dict:
        """What an Outbound Message carrying every field the job needs holds."""
        return {name: record.get(name) for name in fields_to_read(self.svc, object_type)}

    def job(self, job_id: str) -> Job:
        return self.store.get(job_id)

    def memory(self, job_id: str) -> dict:
        return self.store.provider_data(job_id)

    # -- running ------------------------------------------------------------------
    def advance(self, job_id: str) -> str:
        """One run of the job's steps, as far as they go now (no lock, no error mapping)."""
        job = self.job(job_id)
        step = advance_account if job.object == "Account" else advance_person
        return step(self.svc, job, RUNNER)

    def process(self, job_id: str, runner: str = RUNNER) -> str:
        return process_job(self.svc, job_id, runner)

    def read_batch(self) -> int:
        return flush_reads(self.svc.batches)

    def write_batch(self) -> int:
        return flush_writes(self.svc.batches)

    def started(self, job_id: str) -> str:
        """Run the job until its record is read: the first run queues the
        batched read, the flush reads it and resumes the job."""
        assert self.advance(job_id) == "received"
        assert self.read_batch() == 1
        assert job_id in self.tasks.resumed
        return job_id

    def queued_writes(self) -> list[dict]:
        """The queued write items, each with the plan it stands for: the
        queue holds ids and field names, the values wait on the job (24 h
        at most)."""
        items = [json.loads(item) for item in self.store.r.lrange(self.svc.batches.writes.pending, 0, -1)]
        for item in items:
            plan = self.store.provider_data(item["job_id"]).get("write") or {}
            item["changes"] = plan.get("changes", {})
            item["tracked"] = [name for name, rule in plan.get("rules", {}).items() if rule in ("tracked", "always")]
        return items

    def spent(self) -> float:
        return self.svc.quota.spent_today()


def build_flow(redis_client, cache_ttl_s: int = 86_400, **settings) -> Flow:
    settings = load_settings(**{**SETTINGS, **settings})
    store = JobStore(redis_client)
    clodura, clearout = FakeClodura(), FakeClearout()
    salesforce, tasks = FakeSalesforce(INTEGRATION_USER), FakeTasks()
    batches = BatchServices(
        store=store, salesforce=salesforce, guard=ApiGuard(redis_client),
        reads=BatchQueue(redis_client, keys.SALESFORCE_READS), writes=BatchQueue(redis_client, keys.SALESFORCE_WRITES),
        # No waiting for a batch to fill: a flush sends what is queued.
        max_delay_s=0, schedule=tasks.schedule, resume_job=tasks.resume_job)
    svc = Services(settings=settings, clodura=clodura, field_map=load_field_map(), batches=batches,
                   schema=OrgSchema(redis_client, salesforce), cache=ProviderCache(redis_client, cache_ttl_s),
                   quota=Quota(redis_client, settings.clodura_daily_credit_budget), clearout=clearout)
    return Flow(svc, clodura, clearout, salesforce, tasks)
