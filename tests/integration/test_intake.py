"""Intake in bulk: one publish a message, and still exactly once, on the
real Redis and worker of the test stack."""
from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import replace

import pytest
from celery import Celery
from kombu.exceptions import OperationalError

from crm_enrich.dev.devstack import wait_for
from crm_enrich.flow.intake import (
    InboundRecord,
    QueueUnavailable,
    accept_records,
    forget_kept_values,
    forward_records,
    with_kept_values,
)
from crm_enrich.jobs.store import NewJob
from crm_enrich.queues import ENRICH_RECORDS, enqueue_jobs
from crm_enrich.salesforce.batches import READ_AT
from tests.soap_samples import envelope, notification

from .conftest import forwarded_count
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
    # The workers' intake task makes the jobs a moment after the ACK.
    wait_for(lambda: all(store.r.get(f"dedupe:om:{nid}") for nid, _ in pairs), 30, "the intake task")
    jobs = [store.r.get(f"dedupe:om:{nid}") for nid, _ in pairs]
    wait_for(lambda: all(store.get(j).enqueued_at for j in jobs), 30, "every job to be queued")
    assert len(set(jobs)) == 100
    forwarded = forwarded_count(store)
    assert post_soap(stack.web_url, body, stack.outbound_token).status_code == 200
    assert forwarded_count(store) == forwarded   # the redelivery was dropped by the web app: nothing forwarded
    assert [store.r.get(f"dedupe:om:{nid}") for nid, _ in pairs] == jobs
    assert all(store.r.get(f"record:Contact:{rid}:last_job") == j for (_, rid), j in zip(pairs, jobs, strict=True))


class Forwarded:
    """Stands in for the intake task's publish: keeps what was forwarded, so
    the test runs the task's function itself, in the order it chooses."""

    def __init__(self):
        self.messages: list[list[InboundRecord]] = []
        self.values_keys: list[str | None] = []

    def __call__(self, records: list[InboundRecord], values_key: str | None) -> None:
        self.messages.append([InboundRecord.from_task_args(r.to_task_args()) for r in records])
        self.values_keys.append(values_key)


def test_a_redelivery_forwarded_before_the_first_was_taken_in_makes_no_second_job(stack, store):
    """Salesforce resends a message whose ACK it missed, and the resend can
    arrive before the workers have taken in the first: both are forwarded,
    both intake runs happen, and every event still has one job."""
    forwarded = Forwarded()
    batch = records(20, source="outbound_message")
    assert forward_records(store, forwarded, batch).forwarded == 20
    assert forward_records(store, forwarded, batch).forwarded == 20   # nothing taken in yet: forwarded again
    assert len(forwarded.messages) == 2
    sender = CountingSender(stack.redis.url)
    first = accept_records(store, sender.enqueue, forwarded.messages[0])
    second = accept_records(store, sender.enqueue, forwarded.messages[1])
    assert len(first.accepted) == 20 and second.accepted == []
    assert sorted(second.duplicates) == sorted(first.accepted)
    assert sender.published == [ENRICH_RECORDS]
    # Once taken in, a third delivery is dropped before any publish.
    third = forward_records(store, forwarded, batch)
    assert third.forwarded == 0 and third.duplicates == 20 and len(forwarded.messages) == 2


def test_a_forward_that_cannot_be_published_is_not_acknowledged_and_remembers_nothing(store):
    def broker_down(records, values_key):
        raise OperationalError("broker unreachable")

    batch = records(3, source="outbound_message")
    with pytest.raises(QueueUnavailable):
        forward_records(store, broker_down, batch)
    assert all(store.r.get(f"dedupe:{rec.dedupe_key}") is None for rec in batch)


def test_declared_values_wait_under_a_key_of_their_own_for_a_day_at_most(stack, store):
    """The values an Outbound Message declares (emails among them) are kept
    apart from the task's message, 24 h at most; the intake task puts them
    on the jobs, as received when the message came, and drops the key."""
    batch = [replace(rec, values={"LastName": "Kept", "Email": f"kept.{i}@example.com"})
             for i, rec in enumerate(records(3, source="outbound_message"))]
    forwarded = Forwarded()
    before = time.time()
    assert forward_records(store, forwarded, batch).forwarded == 3
    (values_key,) = forwarded.values_keys
    assert values_key and 0 < store.r.ttl(values_key) <= 86_400
    assert "kept.0@example.com" not in json.dumps([r.to_task_args() for r in forwarded.messages[0]])

    inbound = with_kept_values(store, forwarded.messages[0], values_key)
    made = accept_records(store, CountingSender(stack.redis.url).enqueue, inbound)
    forget_kept_values(store, values_key)
    assert store.r.exists(values_key) == 0
    for rec, job_id in zip(batch, made.accepted, strict=True):
        slot = store.provider_data(job_id)["record"]
        assert slot["Email"] == rec.values["Email"] and before <= slot[READ_AT] <= time.time()
