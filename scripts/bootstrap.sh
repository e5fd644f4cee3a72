#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment in .venv and installs the package
# with the given extras. Run by the demo and test commands so both set themselves up.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${KOMMO_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
EXTRAS="${1:-dev}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "kommo-dagster needs Python 3.11 or newer; $PYTHON is $("$PYTHON" --version 2>&1)." >&2
  exit 1
fi

if [ ! -x "$VENV/bin/python" ]; then
  # KOMMO_VENV may name a folder that holds more than the environment.
  made_folder=""
  [ -e "$VENV" ] || made_folder=1
  if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
    # Without python3-venv, Debian's venv fails after it made $VENV/bin/python: remove that
    # half, which a later run would take for a finished environment (the whole folder only
    # when this run made it).
    if [ -n "$made_folder" ]; then rm -rf "$VENV"; else rm -f "$VENV/bin/python"; fi
    # Debian ships venv separately; install it when we are allowed to.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "Installing python3-venv (Debian keeps venv in its own package)..." >&2
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      "$PYTHON" -m venv "$VENV"
    else
      echo "Could not create a virtual environment. On Debian: sudo apt-get install python3-venv" >&2
      exit 1
    fi
  fi
fi

"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
# setuptools warns on every editable install ("be careful with folders ... same name as your
# package"); nothing a newcomer can act on, and it opened the demo's output.
PYTHONWARNINGS=ignore "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  -e "$ROOT[$EXTRAS]"
