#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
#
# On a fresh machine it first installs what the tests need besides the Rust
# toolchain (a Python venv with moto and grpcio-tools, and `buf`, both inside
# the repository), then checks formatting and lints, builds every binary
# once, and runs every test against real processes and servers: the leader
# and agents, moto (S3), the Kubernetes API emulator, Python gRPC clients;
# then the official CWL v1.2 conformance suite (scripts/cwl-conformance.sh).
#
# Usage: scripts/test.sh [extra arguments for `cargo test`]
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "test tools"
./scripts/setup-test-env.sh

step "formatting"
cargo fmt --all -- --check

step "proto lint (buf)"
.tools/node_modules/.bin/buf lint

step "clippy"
cargo clippy --workspace --all-targets -- -D warnings

# One build of every binary and every test, with the features the tests
# need (dev-dependencies included), so that `cargo test` below reuses it
# rather than rebuilding the dependency tree with other features. The
# end-to-end tests run these binaries (they find them next to the test
# executables) and never rebuild.
step "build"
cargo build --workspace --all-targets

step "tests"
cargo test --workspace "$@"

# The official CWL v1.2 conformance suite against toil-cwl-runner, with the
# binaries built above: every required test must pass and the pass count
# may not fall below cwl/conformance/floor (see docs/cwl.md).
step "CWL conformance"
./scripts/cwl-conformance.sh -j 2
