#!/usr/bin/env bash
# Installs what the browser tests need: Debian's chromium and the npm packages in tests/browser.
# Idempotent: does nothing when both are already there.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [ ! -x /usr/bin/chromium ]; then
    echo "browser-setup: installing Debian chromium"
    sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq chromium >/dev/null
fi

if [ ! -d "$root/tests/browser/node_modules/playwright-core" ]; then
    echo "browser-setup: installing npm packages in tests/browser"
    cd "$root/tests/browser"
    if [ -f package-lock.json ]; then
        npm ci --no-audit --no-fund
    else
        npm install --no-audit --no-fund
    fi
fi

/usr/bin/chromium --version 2>/dev/null
