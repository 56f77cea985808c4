#!/usr/bin/env bash
# The test suite: unit tests, then integration tests against a real Redis
# (REDIS_URL, or an embedded Valkey), a real Celery worker and the sandbox.
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
# The dashboard test drives a real headless Chromium (Debian's package). Only
# the test command installs it: the demo never installs system packages.
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "test.sh: could not install chromium; the dashboard browser test will fail until it is installed" >&2
fi
exec .venv/bin/python -m pytest "$@"
