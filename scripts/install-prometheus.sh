#!/usr/bin/env bash
# Installs Prometheus (promtool and the server) from Debian's packages when promtool is missing;
# the test command runs `promtool test rules` and `promtool check config` on deploy/prometheus.
set -euo pipefail
exec "$(dirname "$0")/apt-install.sh" promtool prometheus --version
