#!/usr/bin/env bash
# Checks the monitoring that ships in docker/ with the real tools: promtool
# (Debian's prometheus package, installed by scripts/test_tools.sh when missing) on
# the alert rules and the Prometheus configuration. The live /metrics scrape
# is checked with `promtool check metrics` by
# tests/integration/test_metrics.py, against a running stack.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/test_tools.sh
command -v promtool >/dev/null || { echo "check_monitoring: promtool is needed (apt-get install prometheus)" >&2; exit 1; }
promtool check rules docker/prometheus/alerts.yml
promtool check config docker/prometheus/prometheus.yml
# Each alert fires on the series it is written for (and not before its `for`).
promtool test rules docker/prometheus/alerts_test.yml
