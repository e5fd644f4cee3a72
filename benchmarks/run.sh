#!/usr/bin/env bash
# The benchmark from a fresh clone: builds .venv with the dev and bench extras (dlt for the
# peer), then runs `python -m benchmarks.run` with the given options (see benchmarks/README.md).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# Where bootstrap.sh makes the environment (KOMMO_VENV, else .venv).
VENV="${KOMMO_VENV:-$ROOT/.venv}"
bash scripts/bootstrap.sh dev,bench
exec "$VENV/bin/python" -m benchmarks.run "$@"
