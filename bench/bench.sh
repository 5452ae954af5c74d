#!/bin/bash
# Builds streamkeeper and runs the benchmark (bench/bench.py) in a network namespace of
# its own, so that it only ever talks to 127.0.0.1. Arguments go to bench.py:
#   bench/bench.sh [--streams 20] [--window 15] [--latency-seconds 20]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh --test
[[ -f build/build.ninja ]] || meson setup build
ninja -C build
export SK_BUILD_DIR=$PWD/build
if [[ $(id -u) -eq 0 ]] && unshare -n true 2>/dev/null; then
  exec unshare -n -- sh -c 'ip link set lo up && exec "$@"' sh /usr/bin/python3 bench/bench.py "$@"
fi
echo "WARNING: cannot unshare -n; running on the host's loopback" >&2
exec /usr/bin/python3 bench/bench.py "$@"
