#!/usr/bin/env bash
# Installs what tests/test_browser.py needs, when missing: Debian's chromium and the PyPI
# playwright package. Never runs `playwright install`: that downloads a browser build of its
# own, which cannot be fetched here; the test drives /usr/bin/chromium instead.
set -euo pipefail

PYTHON="${PYTHON:-python3}"

if [ ! -x /usr/bin/chromium ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    echo "install_chromium: installing Debian's chromium" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

if ! "$PYTHON" -c "import playwright.sync_api" 2>/dev/null; then
    echo "install_chromium: installing the playwright package" >&2
    "$PYTHON" -m pip install -q "playwright>=1.45"
fi

/usr/bin/chromium --version 2>/dev/null | head -n 1 >&2 || true
