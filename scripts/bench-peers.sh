#!/usr/bin/env bash
# Installs the peers the full benchmark runs side by side with goim-rs: nginx with nchan
# (Debian) and socket.io (npm, into a persistent tools directory). Idempotent; quick when done.
#
#   scripts/bench-peers.sh            # prints the socket.io directory on its last line
set -euo pipefail

TOOLS=${GOIM_TOOLS:-/var/tmp/goim-tools}
SIO_DIR="$TOOLS/socketio"

if ! [ -e /usr/lib/nginx/modules/ngx_nchan_module.so ] || ! command -v nginx >/dev/null; then
    echo "installing nginx and libnginx-mod-nchan (Debian)" >&2
    # Keep the package's service from starting on port 80: the benchmark runs its own nginx
    # with a config in a temporary directory.
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if ! [ -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod +x "$policy"
        made_policy=1
    fi
    apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq nginx libnginx-mod-nchan >&2
    if [ "$made_policy" = 1 ]; then rm -f "$policy"; fi
fi

if ! command -v node >/dev/null; then
    echo "installing nodejs and npm (Debian)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq nodejs npm >&2
fi

if ! [ -e "$SIO_DIR/node_modules/socket.io/package.json" ]; then
    echo "installing socket.io (npm) into $SIO_DIR" >&2
    mkdir -p "$SIO_DIR"
    (cd "$SIO_DIR" && { [ -e package.json ] || npm init -y >/dev/null; } && npm install --no-audit --no-fund socket.io@4 >&2)
fi

echo "$SIO_DIR"
