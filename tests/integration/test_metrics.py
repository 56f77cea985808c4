"""/metrics reports what every process did, from Redis."""
import requests
from prometheus_client.parser import text_string_to_metric_families

from crm_enrich.sandbox.dataset import build_dataset


def scrape(stack) -> dict:
    text = requests.get(f"{stack.web_url}/metrics", timeout=5).text
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def total(samples, name, **labels) -> float:
    return sum(v for (n, ls), v in samples.items()
               if n == name and all(dict(ls).get(k) == str(v2) for k, v2 in labels.items()))


def test_counters_follow_a_record_through(stack, control, job_for):
    before = scrape(stack)
    p = [p for p in build_dataset().people if p.known and p.email_verdict == "Deliverable"][500]
    (rid,) = control.create_records("Contact", [{"FirstName": p.first_name, "LastName": p.last_name,
                                                 "Email": p.email}])
    assert job_for("Contact", rid).state == "done"
    after = scrape(stack)

    def grew(name, by=1, **labels):
        return total(after, name, **labels) - total(before, name, **labels) >= by

    assert grew("crm_enrich_records_received_total", source="outbound_message")
    assert grew("crm_enrich_jobs_finished_total", state="done")
    assert grew("crm_enrich_provider_calls_total", endpoint="/api/v1/cleanup/enrich", status=200)
    assert grew("crm_enrich_provider_calls_total", endpoint="/api/v1/verify/email", status=200)
    assert grew("crm_enrich_provider_credits_total", by=2)
    assert grew("crm_enrich_salesforce_api_calls_total", by=2)       # one read, one write
    assert grew("crm_enrich_job_to_writeback_seconds_count")
    assert total(after, "crm_enrich_celery_queue_depth", queue="bulk") >= 0
