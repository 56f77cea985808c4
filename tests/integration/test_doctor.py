"""`crm-enrich doctor` against the sandbox stack: all ✓ when healthy, and
the right ✗ with its fix when one part is broken."""
from __future__ import annotations

import re

import pytest

from crm_enrich import keys
from crm_enrich.dev.devstack import EmbeddedRedis, free_port, wait_for
from tests.integration.helpers import doctor

ANSI = re.compile(r"\x1b\[")
ALL_CHECKS = ("settings", "Redis reachable", "Redis persistent (AOF)", "Redis maxmemory-policy", "Salesforce OAuth",
              "mapped fields", "Salesforce API allocation", "Clodura key", "Clodura credits", "Clodura plan limits",
              "Clearout token", "Clearout credits", "PUBLIC_BASE_URL answers /healthz", "worker heartbeat",
              "beat running")


@pytest.fixture(scope="module")
def live_stack(stack):
    """The stack with beat's and a worker's heartbeat present."""
    r = stack.redis_client()
    wait_for(lambda: r.get(keys.BEAT_HEARTBEAT) and r.get(keys.WORKER_HEARTBEAT), 60, "worker and beat heartbeats",
             interval=0.5)
    return stack


def failing(checks: dict) -> set[str]:
    return {name for name, (ok, _, _) in checks.items() if not ok}


def test_a_healthy_deployment_passes_every_check(live_stack):
    code, checks, output = doctor(live_stack.env)
    assert code == 0, output
    assert set(checks) == set(ALL_CHECKS), output
    assert not failing(checks), output
    assert "all checks passed" in output
    assert not ANSI.search(output)  # redirected: plain lines
    assert checks["Salesforce API allocation"][1].endswith("% used)")
    assert re.fullmatch(r"[\d.]+ left", checks["Clodura credits"][1])


def test_a_wrong_clodura_key(live_stack):
    code, checks, output = doctor({**live_stack.env, "CLODURA_API_KEY": "not-the-key-0000"})
    assert code == 1
    assert failing(checks) == {"Clodura key"}, output
    assert "401" in checks["Clodura key"][1] and "CLODURA_API_KEY" in checks["Clodura key"][2]


def test_a_wrong_salesforce_secret(live_stack):
    code, checks, output = doctor({**live_stack.env, "SALESFORCE_CLIENT_SECRET": "not-the-secret"})
    assert code == 1
    assert failing(checks) == {"Salesforce OAuth", "mapped fields", "Salesforce API allocation"}, output
    assert "invalid_client" in checks["Salesforce OAuth"][1]
    assert "SALESFORCE_CLIENT_SECRET" in checks["Salesforce OAuth"][2]


def test_a_redis_without_persistence_that_evicts_and_has_no_worker(live_stack):
    bare = EmbeddedRedis(config={"appendonly": "no", "maxmemory-policy": "allkeys-lru"})
    try:
        code, checks, output = doctor({**live_stack.env, "REDIS_URL": bare.url})
    finally:
        bare.stop()
    assert code == 1
    assert failing(checks) == {"Redis persistent (AOF)", "Redis maxmemory-policy", "worker heartbeat",
                               "beat running"}, output
    assert "appendonly yes" in checks["Redis persistent (AOF)"][2]
    assert checks["Redis maxmemory-policy"][1] == "allkeys-lru"
    assert "noeviction" in checks["Redis maxmemory-policy"][2]
    assert "celery -A worker.app worker" in checks["worker heartbeat"][2]
    assert "celery -A worker.app beat" in checks["beat running"][2]


def test_no_worker_and_no_beat_on_a_sound_redis(live_stack):
    empty = EmbeddedRedis()  # AOF on, noeviction: only the processes are missing
    try:
        code, checks, output = doctor({**live_stack.env, "REDIS_URL": empty.url})
    finally:
        empty.stop()
    assert code == 1
    assert failing(checks) == {"worker heartbeat", "beat running"}, output


def test_redis_unreachable(live_stack):
    code, checks, output = doctor({**live_stack.env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    assert code == 1
    assert {"Redis reachable", "worker heartbeat", "beat running"} <= failing(checks), output
    assert "REDIS_URL" in checks["Redis reachable"][2]


def test_an_unreachable_public_base_url(live_stack):
    url = f"http://127.0.0.1:{free_port()}"
    code, checks, output = doctor({**live_stack.env, "PUBLIC_BASE_URL": url})
    assert code == 1
    assert failing(checks) == {"PUBLIC_BASE_URL answers /healthz"}, output
    assert checks["PUBLIC_BASE_URL answers /healthz"][1].startswith(f"{url}/healthz: ")


def test_a_mapped_field_the_org_lacks(live_stack, tmp_path):
    field_map = tmp_path / "map.toml"
    field_map.write_text('[Contact]\nTitle = { from = "person.title", rule = "fill_blank" }\n'
                         'Favourite_Colour__c = { from = "person.department", rule = "always" }\n')
    code, checks, output = doctor({**live_stack.env, "FIELD_MAP": str(field_map)})
    assert code == 1
    assert failing(checks) == {"mapped field Contact.Favourite_Colour__c"}, output
    assert "create it" in checks["mapped field Contact.Favourite_Colour__c"][2]


def test_bad_settings_stop_at_the_first_line(live_stack):
    env = {k: v for k, v in live_stack.env.items() if k != "CLODURA_API_KEY"}
    code, checks, output = doctor(env)
    assert code == 1
    assert list(checks) == ["settings"] and "CLODURA_API_KEY is missing" in checks["settings"][1]
