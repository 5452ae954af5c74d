#!/bin/bash
# Builds streamkeeper and runs the failover benchmark (bench/bench_failover.py) in a network namespace
# of its own (127.0.0.1 only). Arguments go to bench_failover.py: [--trials 20] [--ttl-ms 1000].
set -euo pipefail
cd "$(dirname "$0")/.."
export SK_BUILD_DIR=${SK_BUILD_DIR:-$PWD/build}
[[ -f $SK_BUILD_DIR/build.ninja ]] || meson setup "$SK_BUILD_DIR"
ninja -C "$SK_BUILD_DIR"
if [[ $(id -u) -eq 0 ]] && unshare -n true 2>/dev/null; then
  exec unshare -n -- sh -c 'ip link set lo up && exec "$@"' sh /usr/bin/python3 bench/bench_failover.py "$@"
fi
echo "WARNING: cannot unshare -n; running on the host's loopback" >&2
exec /usr/bin/python3 bench/bench_failover.py "$@"
