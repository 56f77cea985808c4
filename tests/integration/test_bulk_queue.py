"""A backfill never starves records created meanwhile: bulk work waits in
its own Celery queue, which workers take turns with."""
import requests

from crm_enrich.dev.devstack import wait_for
from crm_enrich.sandbox.dataset import build_dataset


def test_new_record_is_not_held_up_by_a_running_backfill(stack, control, store, job_for):
    people = [p for p in build_dataset().people if p.known and p.email_verdict == "Deliverable"][400:431]
    existing = control.create_records("Contact", [
        {"FirstName": p.first_name, "LastName": p.last_name, "Email": p.email} for p in people[:30]],
        fire_outbound=False)
    resp = requests.post(f"{stack.web_url}/admin/backfill", timeout=10,
                         headers={"Authorization": f"Bearer {stack.admin_token}"},
                         json={"object": "Contact", "ids": existing})
    assert resp.status_code == 202, resp.text
    wait_for(lambda: store.r.llen("bulk") > 0 or any(
        store.r.get(f"record:Contact:{rid}:last_job") for rid in existing), 30, "the backfill to start")

    new = people[30]
    (new_id,) = control.create_records("Contact", [{"FirstName": new.first_name, "LastName": new.last_name,
                                                    "Email": new.email}])
    assert job_for("Contact", new_id, timeout=90).state == "done"

    def backfill_states():
        return [store.get(j).state for rid in existing if (j := store.r.get(f"record:Contact:{rid}:last_job"))]

    assert sum(s == "done" for s in backfill_states()) < len(existing)  # overtaken while it ran
    wait_for(lambda: len(states := backfill_states()) == len(existing) and all(s == "done" for s in states),
             180, "the backfill to finish")


def test_rerun_uses_the_cache_unless_forced(stack, control, store, job_for):
    p = [p for p in build_dataset().people if p.known and p.email_verdict == "Deliverable"][460]
    (rid,) = control.create_records("Contact", [{"FirstName": p.first_name, "LastName": p.last_name,
                                                 "Email": p.email}])
    first = job_for("Contact", rid)
    assert first.state == "done"

    def enrich_calls():
        return sum(1 for e in control.log("clodura") if e["path"] == "/api/v1/cleanup/enrich")

    def rerun(force: bool):
        resp = requests.post(f"{stack.web_url}/admin/rerun", timeout=10,
                             headers={"Authorization": f"Bearer {stack.admin_token}"},
                             json={"object": "Contact", "ids": [rid], "force": force})
        assert resp.status_code == 202, resp.text
        run = resp.json()["runId"]
        (job_id,) = store.r.smembers(f"run:{run}:jobs")
        return wait_for(lambda: (j := store.get(job_id)).final and j, 90, "the re-run job")

    # The first re-run asks with what the write-back added (the LinkedIn
    # URL): a new request. From then on the record, and the request, stay.
    assert rerun(force=False).state == "done"
    calls = enrich_calls()
    assert rerun(force=False).state == "done"
    assert enrich_calls() == calls            # answered from the 24-hour cache
    assert rerun(force=True).state == "done"
    assert enrich_calls() == calls + 1        # forced: asked Clodura again
