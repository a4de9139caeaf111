#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, inside the
# repository (nothing system-wide except Debian packages when missing):
#   .venv-test/        Python venv: moto[server] (S3), grpcio + grpcio-tools
#                      (the Python client test), cwltest (the CWL
#                      conformance suite's driver), prometheus_client
#                      (parses /metrics in the metrics test)
#   .tools/            npm prefix holding `buf` (proto lint)
#   chromium           Debian package: headless browser for the web view's
#                      tests (tests/browser/cdp.py drives it over a pipe
#                      with Python's standard library)
#   mmdebstrap, umoci  Debian packages: scripts/build-appliance-rootfs.sh
#                      builds the appliance image with them (the tests of
#                      tests/tests/appliance_image.rs)
# Idempotent: a second run only checks that everything is present.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*"; }

# --- Python venv -----------------------------------------------------------
PY=${PYTHON:-python3}
if ! .venv-test/bin/python -c 'import moto, grpc, grpc_tools, cwltest' 2>/dev/null; then
  log "creating .venv-test (moto[server], grpcio, grpcio-tools, cwltest)"
  "$PY" -m venv .venv-test
  .venv-test/bin/pip install --quiet --disable-pip-version-check \
    'moto[server]' grpcio grpcio-tools cwltest
fi
log "python venv ok: $(.venv-test/bin/python -c 'import moto; print("moto", moto.__version__)')"
# prometheus_client: its text and OpenMetrics parsers read /metrics in
# tests/tests/metrics.rs (added to venvs made before it was needed).
if ! .venv-test/bin/python -c 'import prometheus_client' 2>/dev/null; then
  log "installing prometheus_client into .venv-test"
  .venv-test/bin/pip install --quiet --disable-pip-version-check prometheus_client
fi

# --- buf (proto lint) --------------------------------------------------------
if [ ! -x .tools/node_modules/.bin/buf ]; then
  log "installing @bufbuild/buf into .tools"
  mkdir -p .tools
  npm install --silent --no-save --no-audit --no-fund --prefix .tools @bufbuild/buf >/dev/null
fi
log "buf ok: $(.tools/node_modules/.bin/buf --version)"

# --- mmdebstrap + umoci (the appliance image without Docker) -----------------
if ! command -v mmdebstrap >/dev/null || ! command -v umoci >/dev/null; then
  log "installing the Debian packages mmdebstrap and umoci"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends mmdebstrap umoci >/dev/null
fi
log "mmdebstrap ok: $(mmdebstrap --version), umoci ok: $(umoci --version)"

# --- chromium (the web view's browser tests) ---------------------------------
if [ ! -x /usr/bin/chromium ]; then
  log "installing the Debian package chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
log "chromium ok: $(/usr/bin/chromium --version 2>/dev/null)"
