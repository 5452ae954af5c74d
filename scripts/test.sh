#!/bin/bash
# The whole suite on a fresh Debian 12 machine (root or sudo):
#   1. packages, 2. normal + ASan/UBSan builds, 3. unit tests (meson test) in both,
#   4. each libFuzzer target ~20 s (clang build in build-fuzz, if targets exist),
#   5. the pytest integration suite inside a network namespace of its own (loopback only),
#      then a subset of it against the ASan/UBSan build (SK_ASAN_PYTEST_TARGETS).
# Ends with one line 'N passed, N failed[, N skipped]' over everything; exit 1 on any failure.
# SK_SKIP_ASAN=1, SK_SKIP_FUZZ=1, SK_FUZZ_SECONDS=N, SK_PYTEST_TARGETS="tests/integration/x.py"
# and SK_PYTEST_ARGS="-x --lf" (both split on spaces) trim a local run;
# SK_BUILD / SK_BUILD_ASAN / SK_BUILD_FUZZ name the build directories (build, build-asan, …).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
B=${SK_BUILD:-build} BA=${SK_BUILD_ASAN:-build-asan} BF=${SK_BUILD_FUZZ:-build-fuzz}
OUT=$ROOT/$B-test-results
rm -rf "$OUT" && mkdir -p "$OUT"
passed=0 failed=0 skipped=0

stage() { echo; echo "=== $* ==="; }
fail_stage() { echo "FAILED: $*"; failed=$((failed + 1)); }

stage "dependencies"
if ! ./scripts/install-deps.sh --test; then
  echo "0 passed, 1 failed"
  exit 1
fi

# meson setup once, reconfigure later runs (options kept).
setup() {
  local dir=$1; shift
  if [[ -f $dir/build.ninja ]]; then meson setup --reconfigure "$dir" "$@" >/dev/null
  else meson setup "$dir" "$@"; fi
}

build() {
  local dir=$1; shift
  stage "build $dir"
  if setup "$dir" "$@" && timeout 900 ninja -C "$dir"; then return 0; fi
  fail_stage "build $dir"
  return 1
}

# Counts meson test results from testlog.json (one JSON object per test).
count_meson() {
  /usr/bin/python3 - "$1" <<'PY'
import json, sys
p = f = s = 0
try:
    for line in open(sys.argv[1]):
        r = json.loads(line).get("result")
        if r in ("OK", "EXPECTEDFAIL"): p += 1
        elif r == "SKIP": s += 1
        else: f += 1
except OSError:
    pass
print(p, f, s)
PY
}

unit_tests() {
  local dir=$1
  stage "unit tests ($dir)"
  rm -f "$dir/meson-logs/testlog.json"
  timeout 900 meson test -C "$dir" --print-errorlogs --num-processes 2 --timeout-multiplier 3
  local rc=$?
  read -r p f s < <(count_meson "$dir/meson-logs/testlog.json")
  # A rebuild that fails inside meson test, or a timeout, counts as a failure too.
  if [[ $rc -ne 0 && $f -eq 0 ]]; then f=1; echo "FAILED: meson test in $dir exited $rc"; fi
  echo "$dir unit tests: $p passed, $f failed, $s skipped"
  passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
  if [[ $p -eq 0 && $f -eq 0 ]]; then echo "(no unit tests registered in $dir)"; fi
}

if build "$B"; then
  unit_tests "$B"
fi

if [[ "${SK_SKIP_ASAN:-0}" != 1 ]]; then
  if build "$BA" -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug; then
    # Leak reports from GStreamer's/GLib's process-lifetime caches would drown real ones.
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:halt_on_error=1} \
    UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
      unit_tests "$BA"
  fi
fi

if [[ "${SK_SKIP_FUZZ:-0}" != 1 ]]; then
  if CC=clang build "$BF" -Dfuzzing=true -Db_lundef=false; then
    stage "fuzzers"
    mapfile -t fuzzers < <(meson introspect "$BF" --targets | /usr/bin/python3 -c '
import json, sys
for t in json.load(sys.stdin):
    if t["type"] == "executable" and "/tests/fuzz/" in t["defined_in"]:
        print(t["filename"][0])')
    [[ ${#fuzzers[@]} -eq 0 ]] && echo "(no fuzz targets yet)"
    for f in "${fuzzers[@]}"; do
      name=$(basename "$f")
      corpus=$ROOT/tests/fuzz/corpus-out/$name
      mkdir -p "$corpus"
      seeds=()
      [[ -d $ROOT/tests/fuzz/corpus/$name ]] && seeds=("$ROOT/tests/fuzz/corpus/$name")
      echo "--- $name (${SK_FUZZ_SECONDS:-20} s)"
      if timeout $(( ${SK_FUZZ_SECONDS:-20} + 60 )) "$f" -max_total_time="${SK_FUZZ_SECONDS:-20}" \
           -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$OUT/$name-" \
           "$corpus" "${seeds[@]}" \
           >"$OUT/$name.log" 2>&1; then
        passed=$((passed + 1)); tail -n 3 "$OUT/$name.log"
      else
        fail_stage "fuzzer $name"; tail -n 40 "$OUT/$name.log"
      fi
    done
  fi
fi

# Runs pytest on "$@" against build dir $1 inside a network namespace of its own; $2 names the
# JUnit file; counts the results. Extra environment comes from the caller.
integration_tests() {
  local dir=$1 xml=$OUT/$2; shift 2
  rm -f "$xml"
  # shellcheck disable=SC2206 # word splitting of the knob is intended
  local pytest_cmd=(/usr/bin/python3 -m pytest "$@" --timeout="${SK_PYTEST_TIMEOUT:-120}"
                    -p no:cacheprovider -o junit_family=xunit2 --junitxml="$xml" -q -rfE
                    ${SK_PYTEST_ARGS:-})
  if [[ $(id -u) -eq 0 ]] && unshare -n true 2>/dev/null; then
    SK_BUILD_DIR=$ROOT/$dir timeout 1200 unshare -n -- sh -c 'ip link set lo up && exec "$@"' sh \
      "${pytest_cmd[@]}"
  else
    echo "WARNING: cannot unshare -n here; running on the host's loopback"
    SK_BUILD_DIR=$ROOT/$dir timeout 1200 "${pytest_cmd[@]}"
  fi
  local rc=$?
  read -r p f s < <(/usr/bin/python3 - "$xml" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    t = sum(int(x.get("tests", 0)) for x in suites)
    f = sum(int(x.get("failures", 0)) + int(x.get("errors", 0)) for x in suites)
    s = sum(int(x.get("skipped", 0)) for x in suites)
    print(t - f - s, f, s)
except Exception:
    print(0, 0, 0)
PY
  )
  passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
  # pytest exit 5 = nothing collected; any other non-zero without a counted failure is one.
  if [[ $rc -ne 0 && $f -eq 0 ]]; then fail_stage "pytest in $dir exited $rc"; fi
}

stage "integration tests (network namespace, loopback only)"
# shellcheck disable=SC2086 # word splitting of the knob is intended
integration_tests "$B" pytest.xml ${SK_PYTEST_TARGETS:-tests/integration}

# The same daemon under ASan/UBSan with leak checking: a node whose log holds a sanitizer report
# fails its test (tests/integration/conftest.py; suppressions in tests/lsan.supp). The whole
# suite takes ~14 min there on 2 cores, too long for every run: a subset that covers hostile
# input, the API and one publisher's clean stop, kill -9, replacement and WHEP playback.
# SK_ASAN_PYTEST_TARGETS=tests/integration runs all of it.
if [[ "${SK_SKIP_ASAN:-0}" != 1 && -x $BA/streamkeeper ]]; then
  stage "integration tests against $BA (subset)"
  asan_targets=(tests/integration/test_bad_input.py tests/integration/test_api.py
                "tests/integration/test_rtmp_publishers.py::test_publish_play_and_clean_stop[obs]"
                "tests/integration/test_rtmp_publishers.py::test_kill9_is_publisher_lost[obs]"
                "tests/integration/test_rtmp_publishers.py::test_second_publish_replaces[obs]")
  # shellcheck disable=SC2206
  [[ -n ${SK_ASAN_PYTEST_TARGETS:-} ]] && asan_targets=(${SK_ASAN_PYTEST_TARGETS})
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:fast_unwind_on_malloc=0} \
  UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
  G_SLICE=always-malloc G_DEBUG=gc-friendly SK_PYTEST_TIMEOUT=240 \
    integration_tests "$BA" pytest-asan.xml "${asan_targets[@]}"
fi

echo
echo "$passed passed, $failed failed, $skipped skipped"
[[ $failed -eq 0 ]]
