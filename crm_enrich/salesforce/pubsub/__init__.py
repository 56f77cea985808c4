"""Salesforce's Pub/Sub API (gRPC): the protocol's stubs and the Avro
schemas of the change events. The stubs are generated from pubsub_api.proto
by scripts/gen_pubsub_stubs.sh."""
