#!/usr/bin/env bash
# The test command. Two environments, both set up from scratch or upgraded:
#   1. .venv: the NEWEST releases pyproject.toml allows -> ruff, then the whole suite (slow tests too)
#   2. .venv-floors: every dependency at its declared floor, pinned together by
#      constraints/floors.txt -> the fast subset (-m "not slow")
# Usage: bash scripts/test.sh [pytest args for the newest run]
#   SKIP_FLOORS=1   only the newest run
#   WORKERS=N       test processes (default: auto, one per core; WORKERS=0 runs in one process)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
FLOORS_VENV=${FLOORS_VENV:-.venv-floors}
WORKERS=${WORKERS:-auto}

echo "== newest releases ($VENV)"
VENV=$VENV bash scripts/setup.sh
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
# -n: one test process per core (each test runs torch on one thread, see tests/conftest.py).
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -n "$WORKERS" --durations=15 "$@"

if [ -z "${SKIP_FLOORS:-}" ]; then
    echo "== declared floors ($FLOORS_VENV, constraints/floors.txt)"
    VENV=$FLOORS_VENV CONSTRAINTS=constraints/floors.txt EXTRAS=test bash scripts/setup.sh
    "$FLOORS_VENV/bin/python" -m pytest -q -p no:cacheprovider -n "$WORKERS" -m "not slow" -x
fi
