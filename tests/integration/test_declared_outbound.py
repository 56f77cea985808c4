"""Outbound Messages that declare their fields (SALESFORCE_OUTBOUND_FIELDS
as the sandbox org sends them, from salesforce/): a record its message
describes is enriched and written back with no read of it; a Contact's
Account fields come from its Account's own notification; without the
declaration (the suite's shared stack) every job reads, as before."""
from __future__ import annotations

import pytest

from crm_enrich.dev.devstack import Stack, declared_outbound_fields, wait_for
from crm_enrich.jobs.state import SkipReason
from crm_enrich.jobs.store import JobStore
from crm_enrich.sandbox.control import SandboxControl
from crm_enrich.sandbox.dataset import build_dataset

from .conftest import final_job
from .helpers import calls_to, log_mark

QUERY, COMPOSITE = "/query", "/composite/sobjects"


@pytest.fixture(scope="module")
def declared_stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("declared"), worker_concurrency=2, extra_env=declared_outbound_fields())
    try:
        stack.start_web()
        stack.start_worker()
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def ctl(declared_stack):
    control = SandboxControl(declared_stack.sandbox.info)
    yield control
    control.clear_faults("clodura")
    control.salesforce_config(om_on_update=False)


@pytest.fixture
def jobs(declared_stack):
    return JobStore(declared_stack.redis_client())


def known_people(start: int, n: int = 1):
    ds = build_dataset()
    people = [p for p in ds.people if p.known and p.email_verdict == "Deliverable"]
    return [(p, ds.company(p.organisation_id)) for p in people[start:start + n]]


def last_seq(control) -> int:
    return log_mark(control, "salesforce")


def calls(control, since: int, part: str) -> list[dict]:
    return calls_to(control, "salesforce", since, part)


def test_a_created_contact_is_written_back_without_a_read(ctl, jobs):
    ((person, _),) = known_people(60)
    mark = last_seq(ctl)
    (rid,) = ctl.create_records("Contact", [{"FirstName": person.first_name, "LastName": person.last_name,
                                             "Email": person.email}])
    job = final_job(jobs, "Contact", rid)
    assert job.state == "done", job.last_error
    written = ctl.record("Contact", rid)
    # Title was never set: absent from the message, so null, so fill_blank wrote it.
    assert written["writes"] and written["record"]["Title"] == person.title
    assert calls(ctl, mark, QUERY) == []
    assert len(calls(ctl, mark, COMPOSITE)) == 1


def test_a_created_lead_is_written_back_without_a_read(ctl, jobs):
    ((person, company),) = known_people(61)
    mark = last_seq(ctl)
    (rid,) = ctl.create_records("Lead", [{"FirstName": person.first_name, "LastName": person.last_name,
                                          "Email": person.email, "Company": company.name}])
    job = final_job(jobs, "Lead", rid)
    assert job.state == "done", job.last_error
    assert ctl.record("Lead", rid)["record"]["Title"] == person.title
    assert calls(ctl, mark, QUERY) == []
    assert len(calls(ctl, mark, COMPOSITE)) == 1


def test_our_write_back_sent_back_by_the_org_is_skipped_without_a_read(ctl, jobs):
    ctl.salesforce_config(om_on_update=True)   # the org also notifies updates: our write-back comes back
    ((person, _),) = known_people(62)
    mark = last_seq(ctl)
    (rid,) = ctl.create_records("Contact", [{"FirstName": person.first_name, "LastName": person.last_name,
                                             "Email": person.email}])
    first = final_job(jobs, "Contact", rid)
    assert first.state == "done", first.last_error

    def echo_handled():
        notes = [n for n in ctl.outbound_log()["notifications"] if n["record_id"] == rid]
        return len(notes) >= 2 and all(n["state"] == "acked" for n in notes)

    wait_for(echo_handled, 30, "the write-back's Outbound Message to be acknowledged")
    echo = final_job(jobs, "Contact", rid)
    assert echo.id != first.id and echo.skip_reason == SkipReason.OWN_WRITE_BACK
    assert calls(ctl, mark, QUERY) == []
    assert len(ctl.record("Contact", rid)["writes"]) == 1


def test_a_contact_whose_account_was_just_created_needs_no_read_and_shares_its_write(ctl, jobs):
    """The Account's own notification gives the Contact's job the Account's
    fields; the Account's write waits for the Contact's (Organisation
    Enrich is held back half a second here so that, however the two jobs
    are scheduled, the Contact's job has found its Account's by then)."""
    ((person, company),) = known_people(63)
    ctl.add_fault("clodura", path="/api/v1/organisation/enrich", delay=0.5, times=1)
    mark = last_seq(ctl)
    (account_id,) = ctl.create_records("Account", [{"Name": company.name}])
    (rid,) = ctl.create_records("Contact", [{"FirstName": person.first_name, "LastName": person.last_name,
                                             "Email": person.email, "AccountId": account_id}])
    contact, account = final_job(jobs, "Contact", rid), final_job(jobs, "Account", account_id)
    assert (contact.state, account.state) == ("done", "done"), (contact.last_error, account.last_error)
    assert ctl.record("Contact", rid)["writes"] and ctl.record("Account", account_id)["writes"]
    assert calls(ctl, mark, QUERY) == []
    (write,) = calls(ctl, mark, COMPOSITE)   # the Contact and its Account in one call
    assert (write["records"], write["object"]) == (2, "Account+Contact")


def test_a_contact_of_an_account_nothing_recent_is_known_of_is_read_with_it(ctl, jobs):
    ((person, company),) = known_people(64)
    (account_id,) = ctl.create_records("Account", [{"Name": company.name}], fire_outbound=False)
    mark = last_seq(ctl)
    (rid,) = ctl.create_records("Contact", [{"FirstName": person.first_name, "LastName": person.last_name,
                                             "Email": person.email, "AccountId": account_id}])
    assert final_job(jobs, "Contact", rid).state == "done"
    assert final_job(jobs, "Account", account_id).state == "done"
    (read,) = calls(ctl, mark, QUERY)   # as today: the Contact, with its Account's fields
    assert read["object"] == "Contact"


def test_without_the_declaration_every_job_reads(control, job_for):
    """The suite's shared stack declares nothing."""
    ((person, _),) = known_people(65)
    mark = last_seq(control)
    (rid,) = control.create_records("Contact", [{"FirstName": person.first_name, "LastName": person.last_name,
                                                 "Email": person.email}])
    assert job_for("Contact", rid).state == "done"
    # The job's read, and the write flush's second one (this stack reads
    # again before every write: WRITEBACK_REREAD_AFTER_S=0).
    assert [e["object"] for e in calls(control, mark, QUERY)] == ["Contact", "Contact"]
