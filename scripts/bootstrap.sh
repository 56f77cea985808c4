#!/usr/bin/env bash
# Creates .venv and installs crm-enrich with its test extra; idempotent, so the
# demo and test commands can both call it on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "crm-enrich needs Python 3.11 or newer (set PYTHON=...)" >&2; exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -e '.[test]'
  rm -f .venv/.installed-*; touch "$stamp"
fi
# System packages the tests use (Debian's): a real headless Chromium for the
# dashboard test, and promtool (in the prometheus package) for the checks of
# a live /metrics scrape and of the alert rules.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null) \
    || echo "bootstrap: could not install ${missing[*]}; the tests that use them will fail until they are installed" >&2
fi
