#!/bin/bash
# What every bench/*.sh does: installs what is missing (test tools included), builds, and runs
# the benchmark bench/SCRIPT in a network namespace of its own, so that it only ever talks to
# 127.0.0.1. SK_BUILD_DIR selects the build directory (default: build/).
#   bench/run-in-netns.sh SCRIPT.py [its arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
script=bench/$1
shift
./scripts/install-deps.sh --test
export SK_BUILD_DIR=${SK_BUILD_DIR:-$PWD/build}
[[ -f $SK_BUILD_DIR/build.ninja ]] || meson setup "$SK_BUILD_DIR"
ninja -C "$SK_BUILD_DIR"
if [[ $(id -u) -eq 0 ]] && unshare -n true 2>/dev/null; then
  exec unshare -n -- sh -c 'ip link set lo up && exec "$@"' sh /usr/bin/python3 "$script" "$@"
fi
echo "WARNING: cannot unshare -n; running on the host's loopback" >&2
exec /usr/bin/python3 "$script" "$@"
