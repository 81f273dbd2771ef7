#!/usr/bin/env bash
# The oracle tests in a clone with nothing beside it (a user's fresh clone has no ../shared/oracles):
# every test marked `oracles` must skip with its one-line reason, and pytest must exit 0.
#
#   bash .ci/fresh_clone_oracles.sh [PYTHON]   # PYTHON: an interpreter with vlmparity's test deps (default python)
#
# The clone is `git clone` of this checkout's committed state into a fresh temporary folder; the clone's own
# src/ is put first on PYTHONPATH, so the clone's code and tests are what runs. Exit 0 when every oracle test
# skipped cleanly, 1 otherwise (the pytest summary and the reasons are printed).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${1:-python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git clone -q "$REPO" "$tmp/x"
[ ! -e "$tmp/shared" ] || { echo "[fresh-clone] $tmp/shared exists: not a clean place" >&2; exit 1; }

cd "$tmp/x"
status=0
env -u VLMPARITY_REQUIRE_ORACLES -u VLMPARITY_ORACLES PYTHONPATH="$tmp/x/src" \
  "$PY" -m pytest -p no:cacheprovider -q -rs -m oracles --junitxml="$tmp/oracles.xml" || status=$?
[ "$status" -eq 0 ] || { echo "[fresh-clone] pytest -m oracles exited $status (expected 0)" >&2; exit 1; }

# Every selected test skipped (none passed, failed or errored), and there were some.
"$PY" - "$tmp/oracles.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET

suite = ET.parse(sys.argv[1]).getroot()
suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
tests, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
bad = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
reasons = {s.get("message", "") for s in suite.iter("skipped")}
ok = tests > 0 and skipped == tests and bad == 0 and all(r.startswith("oracles: ") for r in reasons)
print(f"[fresh-clone] oracle tests: {tests} selected, {skipped} skipped, {bad} failed or errored "
      f"({'ok' if ok else 'NOT ok'})")
sys.exit(0 if ok else 1)
EOF
