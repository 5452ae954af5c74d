#!/bin/bash
# Compares the daemon's CPU of two builds (or two configurations) under the same load, side by
# side, through bench/run-in-netns.sh (bench/bench_ab.py has the method):
#   bench/bench_ab.sh --a BUILD_A --b BUILD_B [--mode rtmp|whip] [--viewers N] [--windows K]
# A build of another commit: git worktree add /tmp/old COMMIT && meson setup /tmp/old/build
# /tmp/old && ninja -C /tmp/old/build. The test tools (publishers, viewer) come from
# SK_BUILD_DIR (default build/).
exec "$(dirname "$0")/run-in-netns.sh" bench_ab.py "$@"
