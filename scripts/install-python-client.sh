#!/usr/bin/env bash
# Installs what the Python example client (examples/python) needs into a virtual environment
# at target/python-client, once; the end-to-end tests run the example with it.
set -euo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel 2>/dev/null || (cd "$(dirname "$0")/.." && pwd))"
venv=target/python-client
if "$venv/bin/python" -c "import grpc, grpc_tools" 2>/dev/null; then
    echo "python client environment ready at $venv"
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r examples/python/requirements.txt
echo "python client environment installed at $venv"
