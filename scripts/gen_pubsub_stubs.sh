#!/usr/bin/env bash
# Regenerates the committed Python stubs of the Pub/Sub API from
# crm_enrich/salesforce/pubsub/pubsub_api.proto. The stubs are committed so
# that neither the product nor CI needs grpcio-tools; run this after editing
# the proto and commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
if ! .venv/bin/python -c 'import grpc_tools' 2>/dev/null; then
  .venv/bin/pip install --quiet -e '.[test,dev]'
fi
# Run from the repository root with the proto's package path, so the
# generated _grpc module imports its messages as
# crm_enrich.salesforce.pubsub.pubsub_api_pb2.
.venv/bin/python -m grpc_tools.protoc \
  --proto_path=. \
  --python_out=. --pyi_out=. --grpc_python_out=. \
  crm_enrich/salesforce/pubsub/pubsub_api.proto
