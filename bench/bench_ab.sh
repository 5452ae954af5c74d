#!/bin/bash
# Compares the daemon's CPU of two builds (or two configurations) under the same load, side by
# side, in a network namespace of its own (bench/bench_ab.py has the method):
#   bench/bench_ab.sh --a BUILD_A --b BUILD_B [--mode rtmp|whip] [--viewers N] [--windows K]
# A build of another commit: git worktree add /tmp/old COMMIT && meson setup /tmp/old/build
# /tmp/old && ninja -C /tmp/old/build. The test tools (publishers, viewer) come from
# SK_BUILD_DIR (default build/).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh --test
export SK_BUILD_DIR=${SK_BUILD_DIR:-$PWD/build}
[[ -f $SK_BUILD_DIR/build.ninja ]] || meson setup "$SK_BUILD_DIR"
ninja -C "$SK_BUILD_DIR"
if [[ $(id -u) -eq 0 ]] && unshare -n true 2>/dev/null; then
  exec unshare -n -- sh -c 'ip link set lo up && exec "$@"' sh /usr/bin/python3 bench/bench_ab.py "$@"
fi
echo "WARNING: cannot unshare -n; running on the host's loopback" >&2
exec /usr/bin/python3 bench/bench_ab.py "$@"
