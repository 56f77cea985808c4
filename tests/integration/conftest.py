"""One running system for the integration tests: Redis (REDIS_URL or an
embedded Valkey), the sandbox over HTTPS, the web app under gunicorn and a
real Celery worker."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from crm_enrich.dev.devstack import Stack, wait_for
from crm_enrich.jobs.store import Job, JobStore
from crm_enrich.sandbox.control import SandboxControl


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    # A short flush lease, so a test can kill a flusher and see its batch
    # recovered within seconds (production: 300 s).
    with Stack(tmp_path_factory.mktemp("stack"), worker_concurrency=2,
               extra_env={"BATCH_LEASE_S": "8", "SALESFORCE_USAGE_RECHECK_S": "2",
                          # Every write reads the record again, however fresh its plan:
                          # the tests of a person's edit meanwhile rely on it.
                          "WRITEBACK_REREAD_AFTER_S": "0"}) as running:
        yield running


# A second system for the provider tests: short callback deadlines, a
# sweeper every second, Clearout as the second opinion and finder, the
# whole waterfall for people Clodura does not match, and Email_Type__c
# mapped with Clearout's attribute checks allowed.
POLL_AFTER_S, GIVE_UP_AFTER_S = 2, 8
WATERFALL = "clearout_email,clearout_linkedin,clodura_search"


def map_with_email_type(directory: Path) -> Path:
    """The default field map with its commented-out Email_Type__c lines on."""
    text = resources.files("crm_enrich").joinpath("default_field_map.toml").read_text()
    path = directory / "field_map.toml"
    path.write_text(text.replace("# Email_Type__c = ", "Email_Type__c = "))
    return path


@pytest.fixture(scope="session")
def provider_stack(tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("providers")
    with Stack(state_dir, worker_concurrency=2, extra_env={
            "VERIFY_POLL_AFTER_S": str(POLL_AFTER_S), "VERIFY_GIVE_UP_AFTER_S": str(GIVE_UP_AFTER_S),
            "SWEEP_INTERVAL_S": "1", "VERIFY_PROVIDER": "clodura_then_clearout",
            "CLEAROUT_FINDER": "true", "WATERFALL_STEPS": WATERFALL, "EMAIL_TYPE_CHECKS": "true",
            "FIELD_MAP": str(map_with_email_type(state_dir))}) as running:
        yield running


@pytest.fixture
def pcontrol(provider_stack):
    ctl = SandboxControl(provider_stack.sandbox.info)
    yield ctl
    ctl.clear_clodura_webhook_faults()
    ctl.clear_faults("clearout")


@pytest.fixture
def pstore(provider_stack):
    return JobStore(provider_stack.redis_client())


@pytest.fixture
def control(stack):
    ctl = SandboxControl(stack.sandbox.info)
    yield ctl
    ctl.clear_faults("clodura")
    ctl.clear_clodura_webhook_faults()
    ctl.clear_faults("salesforce")
    ctl.salesforce_config(om_duplicate_deliveries=False)


@pytest.fixture
def store(stack):
    return JobStore(stack.redis_client())


def final_job(store: JobStore, object_type: str, record_id: str, timeout: float = 60) -> Job:
    """The record's latest job, once it is final."""
    def final():
        job_id = store.r.get(f"record:{object_type}:{record_id}:last_job")
        job = store.get(job_id) if job_id else None
        return job if job and job.final else None

    return wait_for(final, timeout, f"a final job for {object_type} {record_id}")


def forwarded_count(store) -> float:
    """Outbound Message records the web app has acknowledged and handed to
    the workers' intake (counted with the publish, before the ACK)."""
    return float(store.r.hget("metrics:counters", "records_forwarded|source=outbound_message") or 0)


@pytest.fixture
def forwarded(store):
    """Records forwarded since the test began: a refused message must
    forward none (its job would be made only later, by the intake task)."""
    start = forwarded_count(store)
    return lambda: forwarded_count(store) - start


@pytest.fixture
def job_for(store):
    return lambda object_type, record_id, timeout=60: final_job(store, object_type, record_id, timeout)
