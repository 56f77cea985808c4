"""The committed Pub/Sub stubs speak Salesforce's wire format: the package,
the service's methods and the field numbers of the messages we use are the
ones Salesforce publishes (a renumbered field would decode as garbage)."""
from crm_enrich.salesforce.pubsub import pubsub_api_pb2 as pb

SALESFORCE_FIELD_NUMBERS = {
    "TopicRequest": {"topic_name": 1},
    "TopicInfo": {"topic_name": 1, "tenant_guid": 2, "can_publish": 3, "can_subscribe": 4, "schema_id": 5,
                  "rpc_id": 6},
    "EventHeader": {"key": 1, "value": 2},
    "ProducerEvent": {"id": 1, "schema_id": 2, "payload": 3, "headers": 4},
    "ConsumerEvent": {"event": 1, "replay_id": 2},
    "FetchRequest": {"topic_name": 1, "replay_preset": 2, "replay_id": 3, "num_requested": 4, "auth_refresh": 5},
    "FetchResponse": {"events": 1, "latest_replay_id": 2, "rpc_id": 3, "pending_num_requested": 4},
    "SchemaRequest": {"schema_id": 1},
    "SchemaInfo": {"schema_json": 1, "schema_id": 2, "rpc_id": 3},
    "PublishRequest": {"topic_name": 1, "events": 2, "auth_refresh": 3},
    "PublishResponse": {"results": 1, "schema_id": 2, "rpc_id": 3},
    "PublishResult": {"replay_id": 1, "error": 2, "correlation_key": 3},
    "Error": {"code": 1, "msg": 2},
}


def test_package_and_service_are_salesforces():
    assert pb.DESCRIPTOR.package == "eventbus.v1"
    service = pb.DESCRIPTOR.services_by_name["PubSub"]
    assert {"Subscribe", "GetSchema", "GetTopic", "Publish", "PublishStream"} <= set(service.methods_by_name)
    assert service.methods_by_name["Subscribe"].client_streaming
    assert service.methods_by_name["Subscribe"].server_streaming


def test_field_numbers_are_salesforces():
    for message, fields in SALESFORCE_FIELD_NUMBERS.items():
        descriptor = pb.DESCRIPTOR.message_types_by_name[message]
        assert {f.name: f.number for f in descriptor.fields} == fields, message


def test_enums_are_salesforces():
    assert dict(pb.ReplayPreset.items()) == {"LATEST": 0, "EARLIEST": 1, "CUSTOM": 2}
    assert dict(pb.ErrorCode.items()) == {"UNKNOWN": 0, "PUBLISH": 1, "COMMIT": 2}
