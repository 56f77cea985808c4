#!/usr/bin/env bash
# The test suite: unit tests, then integration tests against a real Redis
# (REDIS_URL, or an embedded Valkey), a real Celery worker and the sandbox.
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
scripts/test_tools.sh
exec .venv/bin/python -m pytest "$@"
