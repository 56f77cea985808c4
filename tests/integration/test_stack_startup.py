"""The stack the demo and the tests run on starts robustly on a busy
machine: the web app's port is ours from the start, a process that dies
while starting is reported at once with its log, a start that takes too
long names the process and shows its log. Beat keeps its schedule under
DATA_DIR and writes its own heartbeat."""
from __future__ import annotations

import socket

import pytest
import requests

from crm_enrich import keys
from crm_enrich.dev.devstack import Stack, StartFailed, wait_for


@pytest.fixture
def bare_stack(tmp_path):
    """Redis and the sandbox only; each test starts what it needs."""
    stack = Stack(tmp_path, worker_concurrency=1, start_timeout_s=3600)
    yield stack
    stack.stop()


def test_the_web_port_is_held_until_gunicorn_takes_it(bare_stack):
    with socket.socket() as intruder, pytest.raises(OSError):
        intruder.bind(("127.0.0.1", bare_stack.web_port))
    bare_stack.start_web()
    assert requests.get(f"{bare_stack.web_url}/healthz", timeout=10).json() == {"status": "ok"}
    # Stopped, the web app refuses connections (nothing holds the port for it) ...
    bare_stack.stop_process("web")
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{bare_stack.web_url}/healthz", timeout=10)
    # ... and a restart takes the same port again.
    bare_stack.start_web()
    assert requests.get(f"{bare_stack.web_url}/healthz", timeout=10).ok


def test_a_process_that_dies_while_starting_is_reported_at_once_with_its_log(bare_stack):
    bare_stack.env["SALESFORCE_ORG_ID"] = "not-an-org-id"
    # The start time-out is an hour: only noticing the exit can end this.
    with pytest.raises(StartFailed) as failed:
        bare_stack.start_web()
    message = str(failed.value)
    assert "the web app exited with status" in message
    assert "web.log" in message
    assert "setting SALESFORCE_ORG_ID is invalid" in message  # the log's last lines


def test_a_start_that_times_out_names_the_process_and_its_log(bare_stack):
    bare_stack.start_timeout_s = 0
    with pytest.raises(StartFailed) as failed:
        bare_stack.start_worker()
    message = str(failed.value)
    assert message.startswith("timed out after 0s waiting for Celery worker worker-")
    assert "worker.log" in message


def test_beat_keeps_its_schedule_under_data_dir_and_writes_a_heartbeat(stack):
    r = stack.redis_client()
    beat = wait_for(lambda: r.get(keys.BEAT_HEARTBEAT), 60, "beat's heartbeat", interval=0.5)
    assert float(beat.split()[0]) > 0
    data_dir = stack.state_dir / "data"
    assert stack.env["DATA_DIR"] == str(data_dir)
    assert any(p.name.startswith("celerybeat-schedule") for p in data_dir.iterdir())
