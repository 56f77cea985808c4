#!/usr/bin/env bash
# The linters that keep the code honest: style and bugs (ruff), types
# (mypy), and the one-way dependencies between packages (import-linter).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/lint-imports
