#!/usr/bin/env bash
# The demo: installs into .venv, starts two local Kommo sandbox accounts, materializes every
# stream of both into data/kommo_demo.duckdb with `dagster asset materialize`, prints what
# landed, and says how to open the same runs in `dagster dev`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# Where bootstrap.sh makes the environment (KOMMO_VENV, else .venv).
VENV="${KOMMO_VENV:-$ROOT/.venv}"
echo "Installing kommo-dagster into ${VENV#"$ROOT/"} ..."
bash scripts/bootstrap.sh dev
exec "$VENV/bin/python" scripts/demo.py "$@"
