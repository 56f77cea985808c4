#!/usr/bin/env bash
# The whole flow on the sandbox: ./demo.sh [--records N]
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
exec .venv/bin/crm-enrich demo "$@"
