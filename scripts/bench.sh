#!/bin/bash
# Same as bench/bench.sh (kept next to the other entry points).
exec "$(dirname "$0")/../bench/bench.sh" "$@"
