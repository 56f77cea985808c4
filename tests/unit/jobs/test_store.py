"""JobStore against a real Redis: a refused move changes nothing, a late
finish is a no-op, a passing error keeps the state; and JobMemory's
remember-once rule, which makes every provider answer paid for once."""
from __future__ import annotations

import time

import pytest

from crm_enrich import counters, keys
from crm_enrich.jobs.state import IllegalMove, State
from crm_enrich.jobs.store import NOT_YET, JobStore, Learnt


@pytest.fixture
def store(redis_client):
    return JobStore(redis_client)


def new_job(store: JobStore, record_id: str = "0035g00000QwErTAAB", **kw):
    job, duplicate = store.create_unless_seen(f"om:{record_id}", "Contact", record_id, "outbound_message",
                                              {"Email": "dana@acme.example"}, **kw)
    assert not duplicate
    return job


def stored_view(store: JobStore, job_id: str) -> tuple[dict, dict[str, bool]]:
    """The job's hash as Redis has it, and which state sets hold it."""
    return store.r.hgetall(store.job_key(job_id)), {
        state: job_id in store.ids_in_state(state) for state in State}


def finished_count(store: JobStore, state: str) -> float:
    return sum(value for name, labels, value in counters.read(store.r)
               if name == "jobs_finished" and labels.get("state") == state)


def test_a_new_job_is_received_and_listed_there(store):
    job = new_job(store)
    assert store.get(job.id).state == State.RECEIVED
    assert set(store.ids_in_state(State.RECEIVED)) == {job.id}
    assert store.counts_by_state()[State.RECEIVED] == 1


def test_a_move_is_stored_with_its_step_and_changes_in_one_write(store):
    job = new_job(store)
    store.transition(job, State.ENRICHING, last_error="x")
    again = store.get(job.id)
    assert (again.state, again.last_error) == (State.ENRICHING, "x")
    assert [step["state"] for step in again.steps] == [State.ENRICHING]
    assert set(store.ids_in_state(State.RECEIVED)) == set()
    assert set(store.ids_in_state(State.ENRICHING)) == {job.id}


@pytest.mark.parametrize("path, refused", [
    ([State.DONE], State.ENRICHING),                       # out of a final state
    ([State.SKIPPED], State.SKIPPED),                      # a final state "again"
    ([State.ENRICHING, State.WRITING], State.VERIFYING),   # writing only ends
    ([State.ENRICHING], State.RECEIVED),                   # only held jobs go back to received
])
def test_a_refused_move_leaves_the_stored_job_and_the_callers_copy_unchanged(store, path, refused):
    job = new_job(store)
    for state in path:
        store.transition(job, state)
    before_hash, before_sets = stored_view(store, job.id)
    before_copy = (job.state, list(job.steps), job.updated_at, job.last_error)
    with pytest.raises(IllegalMove, match=f"from {path[-1]} to {refused}"):
        store.transition(job, refused, last_error="must not be written")
    assert stored_view(store, job.id) == (before_hash, before_sets)
    assert (job.state, job.steps, job.updated_at, job.last_error) == before_copy


def test_finish_ends_a_job_once_and_is_a_no_op_on_a_final_job(store):
    job = new_job(store)
    assert store.finish(job, State.FAILED, "x" * 600) is True
    assert store.get(job.id).last_error == "x" * 500   # reasons are cut to 500 characters
    assert finished_count(store, State.FAILED) == 1
    before = stored_view(store, job.id)

    assert store.finish(job, State.DONE, "a late answer") is False
    assert store.finish(job, State.FAILED, "a repeated answer") is False
    assert store.finish_by_id(job.id, State.SKIPPED, "and by id") is None
    assert stored_view(store, job.id) == before
    assert job.state == State.FAILED
    assert finished_count(store, State.FAILED) == 1
    assert finished_count(store, State.DONE) == finished_count(store, State.SKIPPED) == 0


def test_finish_by_id_reads_the_job_and_answers_it_when_it_moved(store):
    job = new_job(store)
    store.transition(job, State.ENRICHING)
    store.transition(job, State.WRITING)
    done = store.finish_by_id(job.id, State.DONE, fields_written=["Title"])
    assert done is not None and done.state == State.DONE
    assert store.get(job.id).fields_written == ["Title"]
    assert store.finish_by_id("no-such-job", State.DONE) is None


def test_note_error_keeps_the_state(store):
    job = new_job(store)
    store.transition(job, State.ENRICHING)
    store.note_error(job, "enrich: 503 Service Unavailable")
    again = store.get(job.id)
    assert again.state == State.ENRICHING
    assert again.last_error == "enrich: 503 Service Unavailable"
    assert [step["state"] for step in again.steps] == [State.ENRICHING, State.ENRICHING]
    assert set(store.ids_in_state(State.ENRICHING)) == {job.id}
    assert not any(name == "jobs_finished" for name, _, _ in counters.read(store.r))


def test_an_event_is_a_duplicate_only_once_its_job_is_queued(store):
    first = new_job(store)
    again, duplicate = store.create_unless_seen(f"om:{first.record_id}", "Contact", first.record_id,
                                                "outbound_message", {})
    assert (again.id, duplicate) == (first.id, False)   # never queued: the retry must queue it
    store.mark_enqueued(first.id)
    again, duplicate = store.create_unless_seen(f"om:{first.record_id}", "Contact", first.record_id,
                                                "outbound_message", {})
    assert (again.id, duplicate) == (first.id, True)
    assert store.r.get(keys.record_last_job("Contact", first.record_id)) == first.id


def test_a_stale_copy_cannot_move_a_job_that_has_ended_meanwhile(store):
    job = new_job(store)
    stale = store.get(job.id)                 # e.g. a sweeper that read the job a moment ago
    store.finish(job, State.DONE)             # meanwhile the write flush finished it
    with pytest.raises(IllegalMove):
        store.transition(stale, State.ENRICHING)
    assert store.get(job.id).state == State.DONE


# -- JobMemory -------------------------------------------------------------------

def test_remembered_computes_once_and_a_replay_sees_the_stored_answer(store):
    job = new_job(store)
    calls = []

    def ask():
        calls.append(1)
        return {"personId": "p_1"}

    assert store.memory(job).remembered("person", ask) == {"personId": "p_1"}
    assert store.memory(job).remembered("person", ask) == {"personId": "p_1"}   # a replayed task
    assert calls == [1]
    assert store.provider_data(job.id) == {"person": {"personId": "p_1"}}


def test_remembered_keeps_none_as_an_answer(store):
    job = new_job(store)
    calls = []
    store.memory(job).remembered("person", lambda: calls.append(1))   # answers None: nobody found
    assert store.memory(job).remembered("person", lambda: calls.append(2)) is None
    assert calls == [1]


def test_not_yet_is_not_remembered(store):
    job = new_job(store)
    assert store.memory(job).remembered("reveal_email", lambda: NOT_YET) is NOT_YET
    assert "reveal_email" not in store.memory(job)
    assert store.memory(job).remembered("reveal_email", lambda: {"email": "d@a.example"}) == {"email": "d@a.example"}


def test_provider_data_expires_a_day_after_the_oldest_answer_it_holds(store):
    job = new_job(store)
    memory = store.memory(job)
    an_hour_ago = time.time() - 3600
    memory.remembered("person", lambda: Learnt({"personId": "p_1"}, an_hour_ago))
    ttl = store.r.ttl(store.provider_key(job.id))
    assert store.provider_ttl_s - 3600 - 5 <= ttl <= store.provider_ttl_s - 3600
    memory.keep("verification", {"status": "valid"})   # a newer answer does not extend it
    assert store.r.ttl(store.provider_key(job.id)) <= ttl
