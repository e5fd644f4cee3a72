#!/usr/bin/env bash
# The test command: builds .venv, lints, and runs the whole suite against the Kommo sandbox.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# Where bootstrap.sh makes the environment (KOMMO_VENV, else .venv).
VENV="${KOMMO_VENV:-$ROOT/.venv}"
bash scripts/bootstrap.sh dev
"$VENV/bin/ruff" check kommo_dagster kommo_dagster_tests benchmarks scripts
"$VENV/bin/ruff" format --check kommo_dagster kommo_dagster_tests benchmarks scripts
exec "$VENV/bin/python" -m pytest "$@"
