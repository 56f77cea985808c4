"""A Contact created in the (simulated) org comes back enriched and verified."""
from crm_enrich.dev.devstack import wait_for
from crm_enrich.sandbox.dataset import build_dataset


def known_person(index: int):
    ds = build_dataset()
    people = [p for p in ds.people if p.known and p.email_verdict == "Deliverable"]
    return people[index], ds.company(people[index].organisation_id)


def test_created_contact_is_enriched_verified_and_written_back(control, job_for):
    person, company = known_person(0)
    (account_id,) = control.create_records("Account", [{"Name": company.name}], fire_outbound=False)
    (contact_id,) = control.create_records("Contact", [{
        "FirstName": person.first_name, "LastName": person.last_name,
        "Email": person.email, "AccountId": account_id}])

    job = job_for("Contact", contact_id)
    assert job.state == "done", job.last_error

    after = control.record("Contact", contact_id)
    record = after["record"]
    assert record["Title"] == person.title
    assert record["Department"] == person.department
    assert record["Clodura_Person_Id__c"] == person.person_id
    assert record["Email_Verification_Status__c"] == "valid"
    assert record["Email_Verified_At__c"] and record["Enriched_At__c"]
    assert record["Email"] == person.email  # never touched
    assert len(after["writes"]) == 1
    assert set(job.fields_written) <= set(after["writes"][0]["fields"]) | {"Title"}


def test_unknown_person_without_email_is_skipped_and_no_reveal_is_paid(control, job_for):
    # Nobody to reveal an address for: no person id, profile or company domain.
    mark = max([e["seq"] for e in control.log("clodura")] or [0])
    (contact_id,) = control.create_records("Contact", [{"FirstName": "Nobody", "LastName": "Atall-Unknown"}])
    job = job_for("Contact", contact_id)
    assert job.state == "skipped", job.last_error
    paths = [e["path"] for e in control.log("clodura", since=mark)]
    assert "/api/v1/search/people/email/match" not in paths
    assert not control.record("Contact", contact_id)["writes"]


def test_existing_title_is_not_overwritten(control, job_for):
    person, _ = known_person(2)
    (contact_id,) = control.create_records("Contact", [{
        "FirstName": person.first_name, "LastName": person.last_name, "Email": person.email,
        "Title": "Chief Tea Officer"}])
    assert job_for("Contact", contact_id).state == "done"
    record = control.record("Contact", contact_id)["record"]
    assert record["Title"] == "Chief Tea Officer"
    assert record["Email_Verification_Status__c"] == "valid"


def test_redelivered_outbound_message_is_processed_once(control, store, job_for):
    control.salesforce_config(om_duplicate_deliveries=True)
    person, _ = known_person(3)
    clodura_mark = max([e["seq"] for e in control.log("clodura")] or [0])
    (contact_id,) = control.create_records("Contact", [{
        "FirstName": person.first_name, "LastName": person.last_name, "Email": person.email}])

    def delivered_twice():
        notes = [n for n in control.outbound_log()["notifications"] if n["record_id"] == contact_id]
        posts = [d for d in control.outbound_log()["deliveries"]
                 if notes and notes[0]["id"] in d["message_ids"] and d["acked"]]
        return len(posts) >= 2

    wait_for(delivered_twice, 30, "the org to deliver the message twice")
    job = job_for("Contact", contact_id)
    assert job.state == "done"

    enrich_calls = [e for e in control.log("clodura", since=clodura_mark)
                    if e["path"] == "/api/v1/cleanup/enrich" and e["status"] == 200]
    assert len(enrich_calls) == 1
    assert len(control.record("Contact", contact_id)["writes"]) == 1


def test_clodura_5xx_is_retried_and_succeeds(control, job_for):
    person, _ = known_person(4)
    mark = max([e["seq"] for e in control.log("clodura")] or [0])
    control.add_fault("clodura", path="/api/v1/cleanup/enrich", status=503,
                      body={"status": 503, "message": "upstream down"}, times=2)
    (contact_id,) = control.create_records("Contact", [{
        "FirstName": person.first_name, "LastName": person.last_name, "Email": person.email}])

    job = job_for("Contact", contact_id, timeout=90)
    assert job.state == "done", job.last_error
    statuses = [e["status"] for e in control.log("clodura", since=mark) if e["path"] == "/api/v1/cleanup/enrich"]
    assert statuses == [503, 503, 200]
    assert job.attempts >= 3
    assert control.record("Contact", contact_id)["record"]["Title"] == person.title


def test_deleted_record_is_skipped_not_failed(control, job_for, stack):
    person, _ = known_person(5)
    control.salesforce_config(listener_url=None)
    try:
        (contact_id,) = control.create_records("Contact", [{"LastName": person.last_name}])
        control.http.post(f"{control.sf}/_sandbox/salesforce/records/Contact/{contact_id}/delete").raise_for_status()
    finally:
        control.salesforce_config(listener_url=stack.outbound_url)
    job = job_for("Contact", contact_id)
    assert job.state == "skipped"
    assert "deleted" in job.last_error
