#!/usr/bin/env bash
# Create (or update) the project's Python environment in .venv.
#   bash scripts/setup-env.sh          runtime packages (requirements.txt)
#   bash scripts/setup-env.sh --dev    plus test and lint tools (requirements-dev.txt)
# Idempotent: a second run only checks that the pinned versions are installed.
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=requirements.txt
[[ "${1:-}" == "--dev" ]] && requirements=requirements-dev.txt

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
if [[ ! -x .venv/bin/python ]]; then
    echo "setup-env: creating .venv with $($python --version)" >&2
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
echo "setup-env: .venv ready ($requirements)" >&2
