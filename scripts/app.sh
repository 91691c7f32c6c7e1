#!/usr/bin/env bash
# Install the project and open the chat UI on http://127.0.0.1:8501 (builds index/ from seeds/ when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export STREAMLIT_BROWSER_GATHER_USAGE_STATS=false
exec "${PYTHON:-python3}" -m streamlit run app.py --server.address 127.0.0.1 --server.headless true "$@"
