#!/bin/bash
# Runs the WHIP benchmark (bench/bench_whip.py) through bench/run-in-netns.sh (installs, builds,
# runs on 127.0.0.1 only). Arguments go to bench_whip.py: [--runs 10] [--window 20]
# [--jitterbuffer-ms 200].
exec "$(dirname "$0")/run-in-netns.sh" bench_whip.py "$@"
