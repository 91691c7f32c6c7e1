#!/usr/bin/env bash
# Install everything, then run lint, types, all tests and the seed-question regression gate.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
PY=${PYTHON:-python3}
export HF_HUB_OFFLINE=1 STREAMLIT_BROWSER_GATHER_USAGE_STATS=false
"$PY" -m ruff check rag tests app.py
"$PY" -m mypy
"$PY" -m pytest -q "$@"
