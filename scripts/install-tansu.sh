#!/usr/bin/env bash
# Installs the tansu Kafka-protocol broker used by the end-to-end tests, unless it is already
# in ~/.cargo/bin. Building it takes about 15 minutes on 2 cores; the binary is cached there.
set -euo pipefail
if command -v tansu >/dev/null 2>&1 || [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/tansu" ]; then
    echo "tansu: $("${CARGO_HOME:-$HOME/.cargo}/bin/tansu" --version 2>/dev/null || tansu --version)"
    exit 0
fi
echo "installing tansu (cargo install tansu --locked --features dynostore,libsql); this takes a while"
cargo install tansu --locked --features dynostore,libsql
