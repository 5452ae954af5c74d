#!/bin/bash
# Builds streamkeeper and runs one node on its embedded defaults (memory store, RTMP on
# 1935, HTTP on 8080). Extra arguments go to the daemon, e.g. --api-token T --http-port 9000.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
[[ -f build/build.ninja ]] || meson setup build
ninja -C build streamkeeper
exec ./build/streamkeeper "$@"
