#!/usr/bin/env bash
# Runs the official CWL v1.2 conformance suite against toil-cwl-runner and
# checks it against the committed expectations (cwl/conformance/):
#   - every `required` test passes, except those listed in
#     cwl/conformance/needs-container (they need a container engine, which
#     CI does not have);
#   - the number of passing tests is at least cwl/conformance/floor, a figure
#     that only ever rises (raise it when more tests pass).
#
# The suite itself is not in this repository. It is looked for in
# $CWL_SPEC_DIR, then in ../shared/cwl-v1.2 beside the repository.
#
# Usage: scripts/cwl-conformance.sh [-j N] [--runner PATH] [--report DIR]
#                                   [extra cwltest arguments, e.g. --tags required]
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

jobs=2
runner="$repo/target/debug/toil-cwl-runner"
report="$repo/target/cwl-conformance"
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    -j) jobs=$2; shift 2 ;;
    --runner) runner=$2; shift 2 ;;
    --report) report=$2; shift 2 ;;
    *) extra+=("$1"); shift ;;
  esac
done

spec=${CWL_SPEC_DIR:-}
if [ -z "$spec" ]; then
  for d in "$repo/../shared/cwl-v1.2" /work/shared/cwl-v1.2; do
    if [ -f "$d/conformance_tests.yaml" ]; then spec=$d; break; fi
  done
fi
if [ -z "$spec" ] || [ ! -f "$spec/conformance_tests.yaml" ]; then
  echo "error: the CWL v1.2 conformance suite was not found." >&2
  echo "  Set CWL_SPEC_DIR to a checkout of https://github.com/common-workflow-language/cwl-v1.2" >&2
  echo "  (the directory holding conformance_tests.yaml), or put it at ../shared/cwl-v1.2." >&2
  exit 2
fi
if [ ! -x "$runner" ]; then
  echo "error: $runner does not exist; build it first: cargo build -p toil-leader --bins" >&2
  exit 2
fi
py="$repo/.venv-test/bin/python"
if ! "$py" -c 'import cwltest' 2>/dev/null; then
  echo "error: cwltest is not installed in .venv-test; run scripts/setup-test-env.sh" >&2
  exit 2
fi

rm -rf "$report" && mkdir -p "$report/work"
start=$(date +%s)
# cwltest exits non-zero whenever any test fails; the checker below decides.
# Each test runs in its own temporary directories under $report/work.
set +e
TMPDIR="$report/work" "$repo/.venv-test/bin/cwltest" \
  --test "$spec/conformance_tests.yaml" --tool "$runner" -j "$jobs" \
  --timeout 300 --junit-xml "$report/junit.xml" --badgedir "$report/badges" \
  "${extra[@]}" -- --relax-path-checks --no-container \
  > "$report/cwltest.out" 2> "$report/cwltest.err"
set -e
end=$(date +%s)
if [ ! -s "$report/junit.xml" ]; then
  echo "error: cwltest wrote no report; the end of its output:" >&2
  tail -n 20 "$report/cwltest.err" >&2
  exit 1
fi
tail -n 3 "$report/cwltest.err" || true
echo "suite wall time: $((end - start)) s with -j $jobs"
exec "$py" "$repo/scripts/cwl-conformance-check.py" \
  --tests "$spec/conformance_tests.yaml" --junit "$report/junit.xml" \
  --floor "$repo/cwl/conformance/floor" \
  --needs-container "$repo/cwl/conformance/needs-container" \
  --log "$report/cwltest.err" --table "$report/by-tag.md" $([ ${#extra[@]} -gt 0 ] && echo --partial)
