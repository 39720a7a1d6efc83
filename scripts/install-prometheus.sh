#!/usr/bin/env bash
# Installs Prometheus (promtool and the server) from Debian's packages when promtool is missing;
# the test command runs `promtool test rules` and `promtool check config` on deploy/prometheus.
set -euo pipefail
if command -v promtool >/dev/null 2>&1; then
    echo "promtool: $(promtool --version 2>&1 | head -1)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "promtool is missing and this is not a Debian-like system: install Prometheus (promtool) and run again" >&2
    exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y --no-install-recommends prometheus >/dev/null \
    || { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends prometheus >/dev/null; }
echo "promtool: $(promtool --version 2>&1 | head -1)"
