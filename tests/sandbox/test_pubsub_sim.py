"""The sandbox org's Pub/Sub API over real gRPC with TLS from the sandbox CA,
driven by the generated client stub; change events decoded with fastavro
through GetSchema, as a subscriber does."""
from __future__ import annotations

import io
import json
import queue
import threading
from pathlib import Path

import fastavro
import grpc
import pytest
import requests

from crm_enrich.salesforce.pubsub import pubsub_api_pb2 as pb
from crm_enrich.salesforce.pubsub import pubsub_api_pb2_grpc as pb_grpc
from crm_enrich.salesforce.pubsub.schemas import field_names
from crm_enrich.sandbox.control import SandboxControl
from crm_enrich.sandbox.server import start_sandbox
from tests.sandbox.test_salesforce_sim import wait_for

CONTACTS = "/data/ContactChangeEvent"
WAIT_S = 5.0


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    box = start_sandbox(tmp_path_factory.mktemp("pubsub-sandbox"))
    yield box
    box.stop()


@pytest.fixture
def control(sandbox):
    ctl = SandboxControl(sandbox.info)
    ctl.pubsub_reset()
    ctl.pubsub_config(retention_s=72 * 3600, keepalive_s=270)
    yield ctl
    ctl.pubsub_config(retention_s=72 * 3600, keepalive_s=270)


@pytest.fixture
def login(sandbox):
    """The integration user's OAuth answer (access_token, instance_url, id)."""
    info = sandbox.info
    resp = requests.post(f"{info['salesforce_url']}/services/oauth2/token", verify=info["ca_bundle"],
                         data={"grant_type": "client_credentials", "client_id": info["salesforce_client_id"],
                               "client_secret": info["salesforce_client_secret"]})
    resp.raise_for_status()
    return resp.json()


class PubSubClient:
    def __init__(self, info: dict, token: str, instance_url: str, tenant_id: str):
        credentials = grpc.ssl_channel_credentials(Path(info["ca_bundle"]).read_bytes())
        self.channel = grpc.secure_channel(info["pubsub_url"], credentials)
        self.stub = pb_grpc.PubSubStub(self.channel)
        self.metadata = (("accesstoken", token), ("instanceurl", instance_url), ("tenantid", tenant_id))
        self.schemas: dict[str, dict] = {}

    def decode(self, event: pb.ConsumerEvent) -> dict:
        schema_id = event.event.schema_id
        if schema_id not in self.schemas:
            info = self.stub.GetSchema(pb.SchemaRequest(schema_id=schema_id), metadata=self.metadata, timeout=WAIT_S)
            self.schemas[schema_id] = json.loads(info.schema_json)
        parsed = fastavro.parse_schema(self.schemas[schema_id])
        return fastavro.schemaless_reader(io.BytesIO(event.event.payload), parsed, None)

    def subscribe(self, preset=pb.LATEST, replay_id: bytes = b"", num_requested: int = 1,
                  topic: str = CONTACTS) -> Stream:
        return Stream(self, pb.FetchRequest(topic_name=topic, replay_preset=preset, replay_id=replay_id,
                                            num_requested=num_requested))

    def close(self):
        self.channel.close()


class Stream:
    """One Subscribe call: FetchRequests go in through a queue, responses
    come out through another (read on a thread, so waits have timeouts)."""

    def __init__(self, client: PubSubClient, first: pb.FetchRequest):
        self.topic = first.topic_name
        self.requests: queue.Queue = queue.Queue()
        self.requests.put(first)
        self.responses: queue.Queue = queue.Queue()
        self.call = client.stub.Subscribe(iter(self.requests.get, None), metadata=client.metadata)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for response in self.call:
                self.responses.put(response)
        except grpc.RpcError as err:
            self.responses.put(err)

    def ask(self, n: int) -> None:
        self.requests.put(pb.FetchRequest(topic_name=self.topic, num_requested=n))

    def next(self) -> pb.FetchResponse:
        item = self.responses.get(timeout=WAIT_S)
        if isinstance(item, grpc.RpcError):
            raise item
        return item

    def events(self, n: int) -> list[pb.ConsumerEvent]:
        """The next `n` events, however the server batches them."""
        out: list[pb.ConsumerEvent] = []
        while len(out) < n:
            out.extend(self.next().events)
        assert len(out) == n
        return out

    def close(self):
        self.requests.put(None)
        self.call.cancel()


@pytest.fixture
def client(sandbox, login):
    c = PubSubClient(sandbox.info, login["access_token"], login["instance_url"], sandbox.info["salesforce_org_id"])
    yield c
    c.close()


def contacts(control, n: int) -> list[str]:
    return control.create_records("Contact", [{"LastName": f"Lee{i}", "Title": "CTO"} for i in range(n)],
                                  fire_outbound=False)


def test_a_created_contact_arrives_as_a_create_event_decoded_through_get_schema(client, control):
    stream = client.subscribe(pb.LATEST, num_requested=1)
    # LATEST starts at the tip as the server reads the request: create after it did.
    wait_for(lambda: any(e["rpc"] == "Subscribe" and e.get("accepted") for e in control.pubsub_log()))
    [contact_id] = control.create_records("Contact", [{"FirstName": "Dana", "LastName": "Lee", "Title": "CTO"}],
                                          fire_outbound=False)
    [event] = stream.events(1)
    stream.close()
    body = client.decode(event)
    header = body["ChangeEventHeader"]
    assert header["entityName"] == "Contact"
    assert header["changeType"] == "CREATE"
    assert header["recordIds"] == [contact_id]
    assert header["commitTimestamp"] > 0
    assert body["Name"] == {"FirstName": "Dana", "LastName": "Lee"}
    assert body["Title"] == "CTO"
    assert body["Email"] is None
    assert len(event.replay_id) == 8
    assert [e["schema_id"] for e in control.pubsub_log() if e["rpc"] == "GetSchema"] == [event.event.schema_id]
    topic = client.stub.GetTopic(pb.TopicRequest(topic_name=CONTACTS), metadata=client.metadata, timeout=WAIT_S)
    assert topic.schema_id == event.event.schema_id and topic.can_subscribe
    assert topic.tenant_guid == control.info["salesforce_org_id"]


def test_flow_control_sends_no_more_than_requested(client, control):
    contacts(control, 3)
    stream = client.subscribe(pb.EARLIEST, num_requested=2)
    first_two = stream.events(2)
    assert [int.from_bytes(e.replay_id, "big") for e in first_two] == sorted(
        int.from_bytes(e.replay_id, "big") for e in first_two)
    stream.ask(1)
    [third] = stream.events(1)
    stream.close()
    assert third.replay_id > first_two[-1].replay_id
    # The third event left only after the second FetchRequest came in.
    entries = control.pubsub_log()
    fetch = next(e["seq"] for e in entries if e.get("rpc") == "Fetch")
    sent_before = [e for e in entries if e["rpc"] == "FetchResponse" and e["seq"] < fetch]
    assert sum(e["events"] for e in sent_before) == 2
    assert sent_before[-1]["pending_num_requested"] == 0
    assert [e["num_requested"] for e in entries if "num_requested" in e] == [2, 1]


def test_an_idle_stream_gets_keepalives_with_the_latest_replay_id(client, control):
    contacts(control, 1)
    control.pubsub_config(keepalive_s=0.1)
    stream = client.subscribe(pb.EARLIEST, num_requested=2)
    [event] = stream.events(1)
    keepalive = stream.next()
    stream.close()
    assert list(keepalive.events) == []
    assert keepalive.latest_replay_id == event.replay_id
    assert keepalive.pending_num_requested == 1


def test_replay_from_a_stored_id_gives_exactly_the_later_events(client, control):
    ids = contacts(control, 3)
    stream = client.subscribe(pb.EARLIEST, num_requested=3)
    events = stream.events(3)
    stream.close()
    assert [client.decode(e)["ChangeEventHeader"]["recordIds"] for e in events] == [[i] for i in ids]

    control.pubsub_config(keepalive_s=0.1)
    stream = client.subscribe(pb.CUSTOM, replay_id=events[0].replay_id, num_requested=10)
    replayed = stream.events(2)
    after = stream.next()  # then nothing but a keepalive
    stream.close()
    assert [e.replay_id for e in replayed] == [e.replay_id for e in events[1:]]
    assert [client.decode(e)["ChangeEventHeader"]["recordIds"] for e in replayed] == [[i] for i in ids[1:]]
    assert list(after.events) == [] and after.latest_replay_id == events[-1].replay_id


@pytest.mark.parametrize("stale", ["expired", "unknown"])
def test_a_replay_id_older_than_the_retention_or_unknown_is_refused(client, control, stale):
    contacts(control, 2)
    first = bytes.fromhex(control.pubsub_events()["events"][0]["replay_id"])
    if stale == "expired":
        control.pubsub_config(retention_s=0)  # both events are now past the retention
        assert control.pubsub_events()["events"] == []
        replay = first
    else:
        replay = b"\xff" * 8
    stream = client.subscribe(pb.CUSTOM, replay_id=replay)
    with pytest.raises(grpc.RpcError) as refused:
        stream.next()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(refused.value.trailing_metadata())["error-code"] == \
        "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"
    # EARLIEST is the way on: it starts at the oldest retained event.
    control.pubsub_config(retention_s=72 * 3600)
    [fresh] = contacts(control, 1)
    stream = client.subscribe(pb.EARLIEST, num_requested=1)
    [event] = stream.events(1)
    stream.close()
    expected = fresh if stale == "expired" else control.pubsub_events()["events"][0]["header"]["recordIds"][0]
    assert client.decode(event)["ChangeEventHeader"]["recordIds"] == [expected]


@pytest.mark.parametrize("bad", ["accesstoken", "tenantid", "instanceurl"])
def test_bad_credentials_are_refused(sandbox, login, control, bad):
    creds = {"accesstoken": login["access_token"], "instanceurl": login["instance_url"],
             "tenantid": sandbox.info["salesforce_org_id"]}
    creds[bad] = {"accesstoken": "00D000000000000!forged", "tenantid": "00D000000000001AAA",
                  "instanceurl": "https://elsewhere.example"}[bad]
    client = PubSubClient(sandbox.info, creds["accesstoken"], creds["instanceurl"], creds["tenantid"])
    try:
        with pytest.raises(grpc.RpcError) as refused:
            client.stub.GetTopic(pb.TopicRequest(topic_name=CONTACTS), metadata=client.metadata, timeout=WAIT_S)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        stream = client.subscribe(pb.EARLIEST)
        with pytest.raises(grpc.RpcError) as refused:
            stream.next()
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        client.close()
    log = control.pubsub_log()
    assert [e["rpc"] for e in log if e.get("refused") == "credentials"] == ["GetTopic", "Subscribe"]
    assert not any(e["rpc"] == "Subscribe" and "accepted" in e for e in log)


@pytest.mark.parametrize(("mode", "change_type"), [("gap", "GAP_CREATE"), ("overflow", "GAP_OVERFLOW")])
def test_the_gap_fault_sends_gap_events_with_ids_only(client, control, mode, change_type):
    control.pubsub_gap_fault(mode, times=1)
    gap_id, normal_id = contacts(control, 2)
    stream = client.subscribe(pb.EARLIEST, num_requested=2)
    gap, normal = (client.decode(e) for e in stream.events(2))
    stream.close()
    assert gap["ChangeEventHeader"]["changeType"] == change_type
    assert gap["ChangeEventHeader"]["recordIds"] == [gap_id]
    assert gap["ChangeEventHeader"]["changedFields"] == []
    assert all(v is None for k, v in gap.items() if k != "ChangeEventHeader")
    assert normal["ChangeEventHeader"]["changeType"] == "CREATE"
    assert normal["ChangeEventHeader"]["recordIds"] == [normal_id] and normal["Title"] == "CTO"


def test_updates_name_their_user_origin_and_changed_fields(sandbox, client, control, login):
    [contact_id] = contacts(control, 1)
    integration_user = login["id"].rsplit("/", 1)[1]
    resp = requests.patch(f"{login['instance_url']}/services/data/v59.0/sobjects/Contact/{contact_id}",
                          json={"Title": "VP Sales", "Department": None}, verify=sandbox.info["ca_bundle"],
                          headers={"Authorization": f"Bearer {login['access_token']}",
                                   "Sforce-Call-Options": "client=crm-enrich"})
    assert resp.status_code == 204
    control.edit_record("Contact", contact_id, {"FirstName": "Dana"})  # a person, in the UI
    stream = client.subscribe(pb.EARLIEST, num_requested=3)
    create, ours, theirs = (client.decode(e) for e in stream.events(3))
    stream.close()
    schema = next(iter(client.schemas.values()))
    assert create["ChangeEventHeader"]["commitUser"] != integration_user

    header = ours["ChangeEventHeader"]
    assert header["changeType"] == "UPDATE"
    assert header["commitUser"] == integration_user
    assert header["changeOrigin"] == "com/salesforce/api/rest/59.0;client=crm-enrich"
    assert set(field_names(header["changedFields"], schema)) >= {"Title", "Department", "LastModifiedDate"}
    assert field_names(header["nulledFields"], schema) == ["Department"]
    assert ours["Title"] == "VP Sales" and ours["Email"] is None

    header = theirs["ChangeEventHeader"]
    assert header["commitUser"] not in ("", integration_user)
    assert header["changeOrigin"] == ""
    assert "FirstName" in field_names(header["changedFields"], schema)
    assert theirs["Name"]["FirstName"] == "Dana"


def test_a_deleted_record_gives_a_delete_event_without_values(client, control):
    [contact_id] = contacts(control, 1)
    control.delete_record("Contact", contact_id)
    stream = client.subscribe(pb.EARLIEST, num_requested=2)
    _create, delete = (client.decode(e) for e in stream.events(2))
    stream.close()
    assert delete["ChangeEventHeader"]["changeType"] == "DELETE"
    assert delete["ChangeEventHeader"]["recordIds"] == [contact_id]
    assert all(v is None for k, v in delete.items() if k != "ChangeEventHeader")


def test_a_client_that_stops_sending_requests_still_gets_what_it_asked_for(client, control):
    stream = client.subscribe(pb.EARLIEST, num_requested=1)
    stream.requests.put(None)  # the request side ends; the call goes on
    wait_for(lambda: any(e.get("requests_ended") for e in control.pubsub_log()))
    [contact_id] = contacts(control, 1)
    [event] = stream.events(1)
    stream.close()
    assert client.decode(event)["ChangeEventHeader"]["recordIds"] == [contact_id]


def test_a_gap_on_an_update_is_a_gap_update(client, control):
    [contact_id] = contacts(control, 1)
    control.pubsub_gap_fault("gap", times=1)
    control.edit_record("Contact", contact_id, {"Title": "CEO"})
    stream = client.subscribe(pb.EARLIEST, num_requested=2)
    create, gap = (client.decode(e) for e in stream.events(2))
    stream.close()
    assert create["ChangeEventHeader"]["changeType"] == "CREATE"
    assert gap["ChangeEventHeader"]["changeType"] == "GAP_UPDATE"
    assert gap["ChangeEventHeader"]["recordIds"] == [contact_id] and gap["Title"] is None


@pytest.mark.parametrize(("entity", "values"), [("Account", {"Name": "Acme", "NumberOfEmployees": 12}),
                                                ("Lead", {"LastName": "Kim", "Company": "Acme"})])
def test_accounts_and_leads_have_topics_of_their_own(client, control, entity, values):
    [record_id] = control.create_records(entity, [values], fire_outbound=False)
    contacts(control, 1)  # on another topic: not on this stream
    stream = client.subscribe(pb.EARLIEST, num_requested=5, topic=f"/data/{entity}ChangeEvent")
    response = stream.next()
    stream.close()
    [event] = response.events
    body = client.decode(event)
    assert body["ChangeEventHeader"]["entityName"] == entity
    assert body["ChangeEventHeader"]["recordIds"] == [record_id]
    if entity == "Account":
        assert body["Name"] == "Acme" and body["NumberOfEmployees"] == 12
    else:
        assert body["Name"] == {"FirstName": None, "LastName": "Kim"} and body["Company"] == "Acme"


def test_an_unknown_topic_or_schema_is_not_found(client, control):
    stream = client.subscribe(pb.EARLIEST, topic="/data/OpportunityChangeEvent")
    with pytest.raises(grpc.RpcError) as missing:
        stream.next()
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as missing:
        client.stub.GetSchema(pb.SchemaRequest(schema_id="nope"), metadata=client.metadata, timeout=WAIT_S)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
