"""Where a topic's subscription resumes, in a real Redis."""
from __future__ import annotations

from crm_enrich import counters
from crm_enrich.ingest import replay
from crm_enrich.jobs.store import JobStore

TOPIC = "/data/ContactChangeEvent"


def test_a_first_start_takes_the_latest_events_then_resumes_after_the_stored_id(redis_client):
    store = JobStore(redis_client)
    assert replay.resume_point(redis_client, TOPIC) == replay.ResumePoint("LATEST")
    replay.save_replay(store, TOPIC, b"\x00\x2a", delivered=3)
    assert replay.resume_point(redis_client, TOPIC) == replay.ResumePoint("CUSTOM", b"\x00\x2a")
    assert replay.resume_point(redis_client, "/data/LeadChangeEvent").preset == "LATEST"
    assert ("cdc_events_delivered", {"topic": TOPIC}, 3.0) in counters.read(redis_client)


def test_a_refused_id_resumes_from_the_earliest_until_an_event_is_queued(redis_client):
    store = JobStore(redis_client)
    replay.save_replay(store, TOPIC, b"\x01", delivered=1)
    replay.restart_from_earliest(store, TOPIC)
    assert replay.resume_point(redis_client, TOPIC) == replay.ResumePoint("EARLIEST")
    replay.save_replay(store, TOPIC, b"\x02", delivered=1)
    assert replay.resume_point(redis_client, TOPIC) == replay.ResumePoint("CUSTOM", b"\x02")
