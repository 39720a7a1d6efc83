#!/usr/bin/env bash
# Installs Debian package PACKAGE when COMMAND is missing, then prints COMMAND's version.
# Usage: scripts/apt-install.sh COMMAND PACKAGE VERSION-ARGS...
# (The project's install scripts use it for tools that come from Debian's packages.)
set -euo pipefail
command_name=$1
package=$2
shift 2
if ! command -v "$command_name" >/dev/null 2>&1; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "$command_name is missing and this is not a Debian-like system: install $package and run again" >&2
        exit 1
    fi
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y --no-install-recommends "$package" >/dev/null \
        || { $sudo apt-get update >/dev/null && $sudo apt-get install -y --no-install-recommends "$package" >/dev/null; }
fi
echo "$command_name: $("$command_name" "$@" 2>&1 | head -1)"
