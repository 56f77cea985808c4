"""Intake in bulk: one publish a message, and still exactly once, on the
real Redis and worker of the test stack."""
from __future__ import annotations

import threading
import uuid

import pytest
from celery import Celery
from kombu.exceptions import OperationalError

from crm_enrich.dev.devstack import wait_for
from crm_enrich.flow.intake import InboundRecord, QueueUnavailable, accept_records
from crm_enrich.jobs.store import NewJob
from crm_enrich.queues import ENRICH_RECORDS, enqueue_jobs
from tests.soap_samples import envelope, notification

from .test_receivers import fresh_ids, post_soap


def records(n: int, source: str = "json_event") -> list[InboundRecord]:
    tag = uuid.uuid4().hex[:10]
    return [InboundRecord(dedupe_key=f"test:{tag}:{i}", object_type="Contact",
                          record_id=f"003{tag}{i:02d}AAA", fields_sent=("LastName",), source=source)
            for i in range(n)]


class CountingSender:
    """The real broker, with a count of the messages published to it."""

    def __init__(self, broker_url: str):
        self.celery = Celery("tests", broker=broker_url)
        self.published: list[str] = []

    def enqueue(self, job_ids: list[str], source: str) -> None:
        enqueue_jobs(self, job_ids, source)

    def send_task(self, name, args=None, **options):
        self.published.append(name)
        return self.celery.send_task(name, args=args, **options)


def test_a_message_of_many_records_is_one_publish_that_the_worker_splits(stack, store):
    sender = CountingSender(stack.redis.url)
    batch = records(12)
    result = accept_records(store, sender.enqueue, batch)
    assert len(result.accepted) == 12 and not result.duplicates
    assert sender.published == [ENRICH_RECORDS]
    # Every job runs: its record is not in the org, so each ends skipped.
    wait_for(lambda: all(store.get(j).final for j in result.accepted), 60, "every job of the fan-out to run")
    assert {store.get(j).state for j in result.accepted} == {"skipped"}
    assert all(store.get(j).enqueued_at for j in result.accepted)


def test_jobs_created_but_not_published_are_queued_by_the_retry(stack, store):
    def broker_down(job_ids, source):
        raise OperationalError("broker unreachable")

    batch = records(5)
    with pytest.raises(QueueUnavailable):
        accept_records(store, broker_down, batch)
    created = [store.r.get(f"dedupe:{rec.dedupe_key}") for rec in batch]
    assert all(created) and all(store.get(j).enqueued_at is None for j in created)

    sender = CountingSender(stack.redis.url)
    retry = accept_records(store, sender.enqueue, batch)
    assert sorted(retry.accepted) == sorted(created) and not retry.duplicates  # the same jobs, now queued
    assert all(store.get(j).enqueued_at for j in created)

    again = accept_records(store, sender.enqueue, batch)
    assert again.accepted == [] and sorted(again.duplicates) == sorted(created)
    assert sender.published == [ENRICH_RECORDS]  # the redelivery published nothing


def test_racing_deliveries_of_one_message_make_one_job_per_event(store):
    tag = uuid.uuid4().hex[:10]
    events = [NewJob(f"test:race:{tag}:{i}", "Contact", f"003{tag}{i:02d}AAA", "json_event", {}) for i in range(50)]
    answers: list[list] = []
    start = threading.Barrier(4)

    def deliver():
        start.wait()
        answers.append(store.create_many_unless_seen(events))

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, event in enumerate(events):
        ids = {answer[i].job_id for answer in answers}
        assert ids == {store.r.get(f"dedupe:{event.dedupe_key}")}   # one job, and every request names it
        assert store.get(ids.pop()) is not None
    # No job was left behind by a request that lost a race.
    made = {a.job_id for answer in answers for a in answer}
    assert len(made) == len(events)


def test_the_same_event_twice_in_one_message_is_one_job(store):
    (rec,) = records(1)
    seen = store.create_many_unless_seen([NewJob(rec.dedupe_key, "Contact", rec.record_id, rec.source, {})] * 2)
    assert seen[0].job_id == seen[1].job_id
    assert not seen[0].duplicate and seen[1].duplicate


def test_a_hundred_notifications_are_acked_and_a_redelivery_queues_nothing(stack, store):
    pairs = [fresh_ids() for _ in range(100)]
    body = envelope([notification(nid, rid, {"LastName": "Hundred"}) for nid, rid in pairs])
    assert post_soap(stack.web_url, body, stack.outbound_token).status_code == 200
    jobs = [store.r.get(f"dedupe:om:{nid}") for nid, _ in pairs]
    assert len(set(jobs)) == 100 and all(store.get(j).enqueued_at for j in jobs)
    assert post_soap(stack.web_url, body, stack.outbound_token).status_code == 200
    assert [store.r.get(f"dedupe:om:{nid}") for nid, _ in pairs] == jobs
    assert all(store.r.get(f"record:Contact:{rid}:last_job") == j for (_, rid), j in zip(pairs, jobs, strict=True))
