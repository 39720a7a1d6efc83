#!/usr/bin/env bash
# Installs what the deployment test (tests/tests/deploy.rs) validates deploy/ with, once:
#   - a virtual environment at target/deploy-validators with PyYAML (parses every YAML file),
#     kubernetes-validate (the Kubernetes manifests against the API's JSON schemas, offline) and
#     dockerfile (BuildKit's own Dockerfile parser);
#   - Debian's docker-compose package when `docker-compose` is missing: `docker-compose config -q`
#     checks the compose file against the compose schema without a Docker engine.
set -euo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel 2>/dev/null || (cd "$(dirname "$0")/.." && pwd))"

venv=target/deploy-validators
if "$venv/bin/python" -c "import yaml, kubernetes_validate, dockerfile" 2>/dev/null; then
    echo "deploy validators ready at $venv"
else
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "PyYAML==6.0.3" "kubernetes-validate==1.37.0" "dockerfile==3.4.0"
    echo "deploy validators installed at $venv"
fi

exec scripts/apt-install.sh docker-compose docker-compose version --short
