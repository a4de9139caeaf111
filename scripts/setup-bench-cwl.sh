#!/usr/bin/env bash
# Installs the reference CWL runner for `bench-cwl` (not needed by the tests):
#   .venv-bench/   Python venv: cwltool (the reference runner) and cwltest
# Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! .venv-bench/bin/python -c 'import cwltool, cwltest' 2>/dev/null; then
  echo "[setup] creating .venv-bench (cwltool, cwltest)"
  "$PY" -m venv .venv-bench
  .venv-bench/bin/pip install --quiet --disable-pip-version-check cwltool cwltest
fi
echo "[setup] cwltool ok: $(.venv-bench/bin/cwltool --version)"
