#!/usr/bin/env bash
# The test command: set up (CPU torch, the package, dev tools, Debian's Bible modules) and run
# the whole suite, slow tests included, then ruff. Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
VENV=${VENV:-.venv}
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/python" -m pytest -q -p no:cacheprovider --durations=15 "$@"
