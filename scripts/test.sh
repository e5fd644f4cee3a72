#!/usr/bin/env bash
# The test command: builds .venv, lints, and runs the whole suite against the Kommo sandbox.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/bootstrap.sh dev
.venv/bin/ruff check kommo_dagster kommo_dagster_tests benchmarks scripts
.venv/bin/ruff format --check kommo_dagster kommo_dagster_tests benchmarks scripts
exec .venv/bin/python -m pytest "$@"
