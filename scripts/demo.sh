#!/usr/bin/env bash
# The demo: installs into .venv, starts a local Kommo sandbox, materializes every stream
# into data/kommo_demo.duckdb with `dagster asset materialize`, prints what landed, and says how
# to open the same runs in `dagster dev`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
echo "Installing kommo-dagster into .venv ..."
bash scripts/bootstrap.sh dev
exec .venv/bin/python scripts/demo.py "$@"
