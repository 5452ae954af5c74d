#!/bin/bash
# Runs the benchmark (bench/bench.py) through bench/run-in-netns.sh (installs, builds, runs on
# 127.0.0.1 only). Arguments go to bench.py:
#   bench/bench.sh [--streams 20] [--decode 4] [--window 20] [--latency-seconds 30]
exec "$(dirname "$0")/run-in-netns.sh" bench.py "$@"
