#!/usr/bin/env bash
# Install the project and its runtime dependencies into the current Python.
# With "test": also the test tools, sentence-transformers (CPU torch pinned first) and Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ "${1:-}" = "test" ]; then
  # The pin takes the CPU build from local disk; an unpinned torch pulls a CUDA build of several GB.
  "$PY" -m pip install -q "torch==2.13.0"
  "$PY" -m pip install -q -e ".[test,st]"
  bash scripts/install_chromium.sh
else
  "$PY" -m pip install -q -e .
fi
