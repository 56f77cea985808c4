#!/usr/bin/env bash
# Checks the Salesforce DX project in salesforce/ without an org: every XML
# file is well-formed, the Salesforce CLI converts the source to Metadata API
# format, and the deploy-time string replacements (sfdx-project.json) fill
# every placeholder of the Outbound Messages. The CLI (pinned in
# scripts/sf-cli/) is installed with npm into .tools/sf-cli on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
export SF_DISABLE_TELEMETRY=true SF_SKIP_NEW_VERSION_CHECK=true SF_AUTOUPDATE_DISABLE=true SF_HIDE_RELEASE_NOTES=true

# 1. Well-formed XML (defusedxml, like the sandbox that reads these files).
scripts/bootstrap.sh
.venv/bin/python - <<'PY'
import sys
from pathlib import Path
from defusedxml import ElementTree
files = sorted(Path("salesforce").rglob("*.xml"))
bad = []
for f in files:
    try:
        ElementTree.parse(f)
    except ElementTree.ParseError as exc:
        bad.append(f"{f}: {exc}")
print(f"salesforce metadata: {len(files)} XML files", "well-formed" if not bad else "with errors")
sys.exit("\n".join(bad) if bad else 0)
PY

# 2. The pinned CLI, reinstalled when its lock file changes.
tools=.tools/sf-cli
stamp=$tools/.installed-$(sha1sum scripts/sf-cli/package-lock.json | cut -c1-12)
if [ ! -f "$stamp" ]; then
  command -v npm >/dev/null || { echo "check_salesforce_metadata: npm (Node 20+) is needed" >&2; exit 1; }
  rm -rf "$tools" && mkdir -p "$tools"
  cp scripts/sf-cli/package.json scripts/sf-cli/package-lock.json "$tools/"
  start=$(date +%s)
  npm ci --prefix "$tools" --no-audit --no-fund --loglevel=error >/dev/null
  touch "$stamp"
  echo "salesforce metadata: installed the Salesforce CLI in $(( $(date +%s) - start )) s"
fi
sf=$PWD/$tools/node_modules/.bin/sf

# 3. Convert as it is, then with the deploy-time replacements applied.
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cd salesforce
"$sf" project convert source --root-dir force-app --output-dir "$out/plain" >/dev/null
for type in CustomField PermissionSet Flow WorkflowOutboundMessage; do
  grep -q "<name>$type</name>" "$out/plain/package.xml" || { echo "converted package.xml lacks $type" >&2; exit 1; }
done
SF_APPLY_REPLACEMENTS_ON_CONVERT=true PUBLIC_BASE_URL=https://enrich.example.com \
  SALESFORCE_OUTBOUND_TOKEN=check-token SALESFORCE_USERNAME=integration@example.com \
  "$sf" project convert source --root-dir force-app --output-dir "$out/replaced" >/dev/null
if grep -rn "YOUR[-_]" "$out/replaced"; then
  echo "a placeholder above is not covered by sfdx-project.json's replacements" >&2; exit 1
fi
grep -q "<endpointUrl>https://enrich.example.com/salesforce/outbound-message/check-token</endpointUrl>" \
  "$out/replaced/workflows/Contact.workflow" || { echo "the Contact Outbound Message endpoint was not filled in" >&2; exit 1; }
version=$(node -p 'require("../.tools/sf-cli/node_modules/@salesforce/cli/package.json").version')
echo "salesforce metadata: converts with @salesforce/cli $version; every placeholder is filled at deploy"
