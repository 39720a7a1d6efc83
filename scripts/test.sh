#!/usr/bin/env bash
# The project's whole test suite: formatting, lints, and every test in the workspace.
# Usage: scripts/test.sh            (from anywhere in the repository)
# Needs only the Rust toolchain: it installs what else the tests use (the tansu broker) with cargo,
# and uses cargo-nextest when it is installed, cargo test otherwise.
set -euo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel 2>/dev/null || (cd "$(dirname "$0")/.." && pwd))"

step() { printf '\n==> %s\n' "$*"; }

step "test tools"
# The end-to-end tests run against a real Kafka-protocol broker (tansu), installed once into
# ~/.cargo/bin (about 15 minutes to build the first time).
scripts/install-tansu.sh
# The Python example client (examples/python) runs against the API in an end-to-end test.
scripts/install-python-client.sh
# promtool (Debian's prometheus package) tests the alert rules in deploy/prometheus.
scripts/install-prometheus.sh
# The deployment files (deploy/) are validated offline: PyYAML, kubernetes-validate's schemas,
# BuildKit's Dockerfile parser and docker-compose's `config`.
scripts/install-deploy-validators.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

# One feature set throughout (all features: the OTLP exporter is built and tested too), so
# the binaries and the tests share their compiled dependencies.
step "cargo build --workspace --bins --all-features (the end-to-end tests run the binaries)"
cargo build --workspace --bins --all-features --locked

if cargo nextest --version >/dev/null 2>&1; then
    # nextest does not run doctests; run them first so nextest's summary closes the output.
    step "cargo test --doc --workspace"
    cargo test --workspace --doc --all-features --locked
    # The runtime's behaviour without the otlp feature (it refuses --otlp-endpoint), which the
    # all-features run below cannot see.
    step "cargo nextest run -p churnwatch-runtime (default features)"
    cargo clippy -p churnwatch-runtime --all-targets --locked -- -D warnings
    cargo nextest run -p churnwatch-runtime --locked
    step "cargo nextest run --workspace"
    cargo nextest run --workspace --all-features --locked --no-fail-fast
else
    step "cargo test --workspace (cargo-nextest not installed)"
    cargo test --workspace --all-features --locked --no-fail-fast
fi
