#!/bin/bash
# Runs the failover benchmark (bench/bench_failover.py) through bench/run-in-netns.sh (installs,
# builds, runs on 127.0.0.1 only). Arguments go to bench_failover.py: [--trials 20] [--ttl-ms 1000].
exec "$(dirname "$0")/run-in-netns.sh" bench_failover.py "$@"
