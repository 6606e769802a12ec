#!/usr/bin/env bash
# Install the browser the dashboard tests drive (tests/test_web_*.py): Debian's Chromium at
# /usr/bin/chromium, through apt. Playwright is told to use it (executable_path); its own
# browser download (`playwright install`) is never used.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "browser: /usr/bin/chromium is missing; install it with: sudo apt-get install -y chromium" >&2
    exit 1
fi
echo "browser: installing Debian's chromium"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q chromium >/dev/null 2>&1; then
    apt-get update -q >/dev/null
    apt-get install -y -q chromium >/dev/null
fi
/usr/bin/chromium --version 2>/dev/null || true
echo "browser: chromium installed"
