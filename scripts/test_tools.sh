#!/usr/bin/env bash
# The system packages only the tests use, never the demo (which touches no
# system package): installed from Debian's packages when missing and root.
set -euo pipefail
# System packages the tests use (Debian's): a real headless Chromium for the
# dashboard test, and promtool (in the prometheus package) for the checks of
# a live /metrics scrape and of the alert rules.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null) \
    || echo "test_tools: could not install ${missing[*]}; the tests that use them will fail until they are installed" >&2
fi
