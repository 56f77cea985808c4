"""The pure logic of the scheduled re-verification: how many records fit,
which records are due, when a previous run still holds the next one back."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from crm_enrich.field_map import load_field_map
from crm_enrich.operations.operator_input import SOURCE_FOR_KIND
from crm_enrich.operations.reverify import (
    SELECTION_STALLED_S,
    allowance,
    cutoff_literal,
    reverify_condition,
    run_open,
    selection_stalled,
    verification_cost,
    verified_at_field,
)
from crm_enrich.queues import BULK_QUEUE, REVERIFY_OLD_EMAILS, REVERIFY_SOURCE, queue_for
from crm_enrich.salesforce.soql import selection_soql
from crm_enrich.sandbox.salesforce import parse_soql
from crm_enrich.settings import SettingsError, load_settings
from tests.unit.test_settings_and_logs import GOOD
from worker.schedule import beat_schedule

SETTINGS = {k.lower(): v for k, v in GOOD.items()}


def test_without_a_budget_the_per_run_cap_decides():
    assert allowance(500, 0.04) == 500


@pytest.mark.parametrize("budget, spent, share, cap, expected", [
    (100, 0, 0.5, 10_000, 1250),    # 50 credits at 0.04
    (100, 0, 0.5, 3, 3),            # the cap is smaller
    (100, 49.88, 0.5, 500, 3),      # 0.12 left (0.11999999999999744 in floats): three
    (100, 49.9, 0.5, 500, 2),       # 0.10 left: two, never a part of one
    (100, 50, 0.5, 500, 0),         # the share is spent
    (100, 80, 0.5, 500, 0),         # new records spent beyond it: still nothing, never negative
    (10, 0, 1.0, 500, 250),         # share 1: the whole remaining budget
])
def test_a_run_takes_no_more_than_its_share_of_the_budget_left_pays_for(budget, spent, share, cap, expected):
    assert allowance(cap, 0.04, budget, spent, share) == expected


def test_the_cost_is_a_standard_check_unless_every_check_is_deep():
    assert verification_cost("catch_all") == verification_cost("never") == 0.04
    assert verification_cost("always") == 0.1


def test_due_records_have_an_email_verified_before_the_cutoff():
    now = datetime(2025, 3, 31, 12, 0, 5, 123456, tzinfo=UTC)
    cutoff = cutoff_literal(now, 30)
    assert cutoff == "2025-03-01T12:00:05Z"  # unquoted, UTC, no fraction: a SOQL dateTime literal
    where = reverify_condition("Email_Verified_At__c", cutoff)
    assert where == "Email != null AND Email_Verified_At__c < 2025-03-01T12:00:05Z"
    # The capped selection reads the oldest verdicts first; the simulator's
    # parser (Salesforce's rules) accepts it.
    soql = selection_soql("Id", "Contact", where, "Email_Verified_At__c", 3)
    assert soql.endswith(" ORDER BY Email_Verified_At__c LIMIT 3")
    query = parse_soql(soql)
    assert (query.order_by, query.limit, [w[1] for w in query.where]) == ("Email_Verified_At__c", 3, ["!=", "<"])
    assert selection_soql("Id", "Contact", "LastName = 'x'") == "SELECT Id FROM Contact WHERE LastName = 'x'"


def test_the_verdict_time_field_comes_from_the_field_map():
    field_map = load_field_map()
    assert verified_at_field(field_map, "Contact") == verified_at_field(field_map, "Lead") == "Email_Verified_At__c"
    assert verified_at_field(field_map, "Account") is None


@pytest.mark.parametrize("run, still_open", [
    (None, False),                                                  # expired
    ({"status": "selecting", "queued": 0, "finished": 0}, True),
    ({"status": "queued", "queued": 3, "finished": 2}, True),       # a job still verifying or writing
    ({"status": "queued", "queued": 0, "finished": 0}, False),      # the selection found nothing after all
    ({"status": "finished", "queued": 3, "finished": 3}, False),
    ({"status": "failed", "queued": 0, "finished": 0}, False),
])
def test_a_previous_run_holds_the_next_back_until_its_jobs_are_final(run, still_open):
    assert run_open(run) is still_open


def test_a_run_whose_selection_task_was_lost_is_recognised():
    now = 1_000_000.0
    long_ago = now - SELECTION_STALLED_S - 1

    def run(status="selecting", queued=0, created=long_ago):
        return {"status": status, "queued": queued, "createdAt": created}

    assert selection_stalled(run(), None, now)
    assert not selection_stalled(run(created=now - 5), None, now)          # just sent
    assert not selection_stalled(run(queued=2), None, now)                 # its first page came
    assert not selection_stalled(run(status="queued"), None, now)          # selected (nothing found)
    assert not selection_stalled(run(), now - 5, now)                      # sent again a moment ago
    assert selection_stalled(run(), long_ago, now)                         # and lost again


def test_reverify_jobs_are_bulk_work():
    assert SOURCE_FOR_KIND["reverify"] == REVERIFY_SOURCE
    assert queue_for(REVERIFY_SOURCE) == BULK_QUEUE


def test_beat_schedules_it_only_when_turned_on():
    off = beat_schedule(load_settings(**SETTINGS))
    assert REVERIFY_OLD_EMAILS not in [entry["task"] for entry in off.values()]
    on = load_settings(**SETTINGS, reverify_after_days=90, reverify_interval_s=3600)
    entry = beat_schedule(on)["reverify-old-emails"]
    assert entry == {"task": REVERIFY_OLD_EMAILS, "schedule": 3600,
                     "options": {"queue": BULK_QUEUE, "expires": 3600}}
    defaults = load_settings(**SETTINGS)
    assert (defaults.reverify_after_days, defaults.reverify_max_per_run, defaults.reverify_interval_s,
            defaults.reverify_budget_share) == (None, 500, 86_400, 0.5)


@pytest.mark.parametrize("name, value", [("reverify_after_days", 0), ("reverify_max_per_run", 0),
                                         ("reverify_budget_share", 1.5), ("reverify_interval_s", 0)])
def test_bad_reverify_settings_are_named(name, value):
    with pytest.raises(SettingsError, match=name.upper()):
        load_settings(**SETTINGS, **{name: value})
